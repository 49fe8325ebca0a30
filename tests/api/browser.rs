//! A headless Chromium driven through chromedriver (Debian's `chromium` + `chromium-driver`,
//! installed by `.ci/run`), for the page tests.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A WebDriver session and the chromedriver serving it (killed when dropped).
pub async fn start() -> (Client, tokio::process::Child) {
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
        "the page tests need Debian's chromium and chromium-driver: `bash .ci/run` installs them"
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let driver = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let profile = std::env::temp_dir().join(format!("seckill-chromium-{port}"));
    let caps = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            // The machines have no internet: keep Chromium from reaching for it.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--window-size=1200,1400", format!("--user-data-dir={}", profile.display())]
        }
    });
    let caps = caps.as_object().expect("object").clone();
    let url = format!("http://127.0.0.1:{port}");
    let mut last_error = None;
    for _ in 0..100 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return (client, driver),
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot start a Chromium session: {last_error:?}");
}
