//! The operator's admin page (`GET /admin`) in a real headless Chromium (Debian's `chromium` +
//! `chromium-driver`, installed by `.ci/run`): token sign-in, creating a sale, and the live view
//! following it as it sells out.

use serde_json::{json, Value};

use crate::browser::Browser;
use crate::helpers::{Options, TestServer, ADMIN_TOKEN};

/// The page polls its stats this often in the tests (the default is 1 s).
const PAGE: &str = "/admin?interval_ms=200";

/// `document.body.dataset.points`: how many stats polls the chart has recorded.
async fn points(browser: &Browser) -> u64 {
    browser
        .js("return Number(document.body.dataset.points || 0)")
        .await
        .as_u64()
        .unwrap_or(0)
}

/// Signs in with the right token and waits for the first stats poll.
async fn sign_in(browser: &Browser, app: &TestServer) {
    browser.goto(&app.url(PAGE)).await;
    browser.type_into("#token", ADMIN_TOKEN).await;
    browser.click("#sign-in").await;
    browser
        .wait_for("the live view after signing in", async |b| points(b).await >= 1)
        .await;
    assert!(
        browser.displayed("#create-sale").await,
        "the dashboard shows once signed in"
    );
}

/// Fills the create-sale form (start and end left empty) and submits it.
async fn create_sale(browser: &Browser, name: &str, stock: &str, limit: &str) {
    browser.type_into("#sale-name", name).await;
    browser.type_into("#sale-stock", stock).await;
    browser.type_into("#sale-limit", limit).await;
    browser.click("#create-sale").await;
}

/// What the server itself answers to `GET /api/admin/stats` with `token`.
async fn stats_with(app: &TestServer, token: &str) -> (u16, Value) {
    let resp = app
        .client
        .get(app.url("/api/admin/stats"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_page_refuses_a_wrong_token_then_creates_a_sale_and_watches_it_sell() {
    let app = TestServer::spawn_with(Options {
        demo_stock: 100,
        ..Options::new()
    })
    .await;
    let (status, refusal) = stats_with(&app, "not-the-token").await;
    assert_eq!(status, 403, "{refusal}");
    assert_eq!(refusal["error"]["code"], "forbidden", "{refusal}");
    let refusal = refusal["error"]["message"].as_str().unwrap().to_owned();

    let browser = Browser::start().await;
    browser.goto(&app.url(PAGE)).await;

    // A wrong token: the server's message, and still the sign-in form.
    browser.type_into("#token", "not-the-token").await;
    browser.click("#sign-in").await;
    browser
        .wait_for("the refusal of the wrong token", async |b| {
            b.text("#auth-error").await == refusal
        })
        .await;
    assert!(browser.displayed("#token").await, "back on the sign-in form");
    assert!(
        !browser.displayed("#create-sale").await,
        "no dashboard without the token"
    );
    assert_eq!(points(&browser).await, 0);

    // The right one: kept for this tab only.
    browser.type_into("#token", ADMIN_TOKEN).await;
    browser.click("#sign-in").await;
    browser.wait_for("the live view", async |b| points(b).await >= 1).await;
    assert_eq!(browser.text("#auth-error").await, "");
    let stored = browser
        .js("return [sessionStorage.getItem('seckill-admin-token'), JSON.stringify(localStorage)]")
        .await;
    assert_eq!(stored[0], ADMIN_TOKEN, "the token is in sessionStorage");
    assert!(
        !stored[1].as_str().unwrap().contains(ADMIN_TOKEN),
        "the token is not in localStorage: {stored}"
    );

    // Create a sale of 5.
    create_sale(&browser, "admin page sale", "5", "1").await;
    browser
        .wait_for("the sale to be created", async |b| {
            b.text("#create-result").await.starts_with("created sale ")
        })
        .await;
    let shown = browser.text("#create-result").await;
    let id: i64 = shown
        .strip_prefix("created sale ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no sale id in {shown:?}"));
    let (status, sale) = app.get(&format!("/api/sales/{id}")).await;
    assert_eq!(status, 200, "{sale}");
    assert_eq!(sale["name"], "admin page sale");
    assert_eq!(sale["stock"], 5);
    assert_eq!(sale["per_user_limit"], 1);
    assert!(sale["starts_at"].is_null() && sale["ends_at"].is_null(), "{sale}");

    // The newest sale is the one followed: its row and the headline show the full stock.
    let row = format!("[data-sale-id=\"{id}\"]");
    let row_remaining = format!("{row} .remaining");
    let row_status = format!("{row} .status");
    browser
        .wait_for("the new sale in the live view", async |b| {
            b.text("#remaining").await == "5" && b.text(&row_remaining).await == "5"
        })
        .await;
    assert_eq!(browser.text(&row_status).await, "live");

    // Record every value `#rate` takes: a purchase burst shows in one poll interval only.
    browser
        .js("window.maxRate = 0;
             new MutationObserver(() => {
               const v = parseFloat(document.getElementById('rate').textContent);
               if (v > window.maxRate) window.maxRate = v;
             }).observe(document.getElementById('rate'), { childList: true, characterData: true, subtree: true });")
        .await;
    let points_before = points(&browser).await;

    for user in ["u1", "u2", "u3"] {
        let (status, order) = app.buy(id, user).await;
        assert_eq!(status, 201, "{order}");
    }
    browser
        .wait_for("remaining 2 in the headline and the table", async |b| {
            b.text("#remaining").await == "2" && b.text(&row_remaining).await == "2"
        })
        .await;
    browser
        .wait_for("a non-zero purchase rate", async |b| {
            b.js("return window.maxRate").await.as_f64().unwrap_or(0.0) > 0.0
        })
        .await;
    browser
        .wait_for("the chart to move", async |b| points(b).await > points_before + 2)
        .await;
    assert!(
        browser.text("#successes").await.parse::<u64>().unwrap() >= 3,
        "successes counted"
    );
    let p99 = browser.text("#p99").await;
    assert!(p99.parse::<f64>().is_ok(), "p99 latency in ms: {p99:?}");
    assert_eq!(browser.text("#errors").await, "0", "no server errors");

    // Something is drawn on the canvas.
    let inked = browser
        .js("const c = document.getElementById('chart');
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
             return n;")
        .await;
    assert!(inked.as_u64().unwrap() > 0, "the chart is drawn");

    // Sell the rest, and one more buyer finds it sold out.
    for user in ["u4", "u5"] {
        let (status, order) = app.buy(id, user).await;
        assert_eq!(status, 201, "{order}");
    }
    let (status, refused) = app.buy(id, "u6").await;
    assert_eq!(status, 410, "{refused}");
    browser
        .wait_for("sold out in the table", async |b| {
            b.text(&row_status).await == "sold_out" && b.text("#remaining").await == "0"
        })
        .await;
    browser
        .wait_for("the refusal counted", async |b| {
            b.text("#refusals").await.parse::<u64>().unwrap_or(0) >= 1
        })
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_page_shows_validation_errors() {
    let app = TestServer::spawn().await;
    let browser = Browser::start().await;
    sign_in(&browser, &app).await;

    // The page shows the server's own message for each refusal.
    for (stock, limit) in [("-1", "1"), ("5", "0")] {
        let (status, expected) = app
            .create_sale(json!({ "name": "invalid", "stock": stock.parse::<i64>().unwrap(),
                                 "per_user_limit": limit.parse::<i64>().unwrap() }))
            .await;
        assert_eq!(status, 400, "{expected}");
        assert_eq!(expected["error"]["code"], "invalid_sale", "{expected}");
        let message = expected["error"]["message"].as_str().unwrap().to_owned();

        create_sale(&browser, "invalid", stock, limit).await;
        browser
            .wait_for("the validation error", async |b| {
                b.text("#create-result").await.contains(&message)
            })
            .await;
    }
    let (_, sales) = app.get("/api/sales").await;
    assert!(
        sales["sales"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != "invalid"),
        "nothing was created: {sales}"
    );
    assert!(browser.displayed("#create-sale").await, "still signed in");
    browser.close().await;
}

/// The followed sale's waiting room: its queue's length, admissions, the room's rate and its
/// expired tickets, the numbers the server counts; a sale without a room shows no such tile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_page_shows_the_followed_sales_waiting_room() {
    let app = TestServer::spawn().await;
    let room_sale = |rate: u32, starts_in: Option<i64>| {
        let mut sale = json!({ "name": "queued", "stock": 10,
                "waiting_room": { "admit_per_sec": rate, "mode": "fifo", "ticket_ttl_secs": 30 } });
        if let Some(seconds) = starts_in {
            sale["starts_at"] = json!(crate::helpers::rfc3339_in(seconds));
        }
        sale
    };
    let join = |sale: i64, user: String| {
        let app = &app;
        async move {
            let path = format!("/api/sales/{sale}/queue");
            let (status, _, body) = crate::requests::post(app, &path, &[("x-user-id", &user)]).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    // Starts in an hour: its four joiners wait.
    let (status, later) = app.create_sale(room_sale(7, Some(3600))).await;
    assert_eq!(status, 201, "{later}");
    let later = later["id"].as_i64().expect("id");
    for i in 0..4 {
        assert_eq!(join(later, format!("w{i}")).await["state"], "waiting");
    }
    // Open at once, well within its burst: its three joiners are admitted on joining.
    let (status, open) = app.create_sale(room_sale(100, None)).await;
    assert_eq!(status, 201, "{open}");
    let open = open["id"].as_i64().expect("id");
    for i in 0..3 {
        assert_eq!(join(open, format!("a{i}")).await["state"], "admitted");
    }

    let browser = Browser::start().await;
    sign_in(&browser, &app).await;
    // The newest sale is followed.
    browser
        .wait_for("the open sale's room", async |b| {
            b.displayed("#queue-tile").await
                && b.text("#queue-waiting").await == "0"
                && b.text("#queue-admitted").await == "3"
                && b.text("#queue-room-rate").await == "100"
                && b.text("#queue-expired").await == "0"
        })
        .await;
    browser
        .js(&format!(
            "const s = document.getElementById('follow'); s.value = '{later}';
             s.dispatchEvent(new Event('change'));"
        ))
        .await;
    browser
        .wait_for("the later sale's room", async |b| {
            b.text("#queue-waiting").await == "4"
                && b.text("#queue-admitted").await == "0"
                && b.text("#queue-room-rate").await == "7"
        })
        .await;
    // The same counters in the stats the page reads.
    let (_, stats) = stats_with(&app, ADMIN_TOKEN).await;
    let queue = stats["queues"]
        .as_array()
        .and_then(|q| q.iter().find(|q| q["sale"] == later))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        (queue["waiting"].as_u64(), queue["admitted"].as_u64()),
        (Some(4), Some(0)),
        "{stats}"
    );

    // A sale without a room: no waiting-room tile.
    let plain = app.live_sale(5, 1).await;
    browser
        .js(&format!(
            "const s = document.getElementById('follow'); s.value = '{plain}';
             s.dispatchEvent(new Event('change'));"
        ))
        .await;
    browser
        .wait_for("no room tile", async |b| !b.displayed("#queue-tile").await)
        .await;
    browser.close().await;
}
