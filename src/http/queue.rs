//! The waiting room's routes: joining a sale's queue and polling a ticket. Admission itself is
//! checked on the purchase ([`super::AppState::check_admission`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use seckill_api::{TicketState, TicketView};

use super::error::ApiError;
use super::extract::{AltchaAnswer, Buyer, PathParams, Poller};
use super::AppState;
use crate::domain::{now_millis, Millis, Refusal, Sale, SaleId, UserId, WaitingRoomSpec};
use crate::gate::StockGate;
use crate::store::OrderStore;
use crate::waiting_room::{Place, Standing};

type Shared<G, S> = State<Arc<AppState<G, S>>>;

/// `GET /api/sales/{id}/challenge`: a proof-of-work challenge for this buyer's join (404
/// `no_challenge` when the server asks none).
pub async fn challenge<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams(id): PathParams<String>,
    Buyer(user): Buyer,
) -> Result<Response, ApiError> {
    let (sale, _, now) = open_room(&app, &id).await?;
    Ok(Json(app.challenges.issue(sale.id, &user, now)?).into_response())
}

/// `POST /api/sales/{id}/queue`: the buyer's ticket, the same one if they joined before.
pub async fn join<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams(id): PathParams<String>,
    Buyer(user): Buyer,
    AltchaAnswer(altcha): AltchaAnswer,
) -> Result<Response, ApiError> {
    let (sale, room, now) = open_room(&app, &id).await?;
    // Before the queue is touched: an unsolved join costs one HMAC at most.
    let altcha = altcha.as_ref().map(|v| v.to_str().unwrap_or(""));
    app.challenges.check(altcha, sale.id, &user)?;
    // Open from creation until the end or the last unit: joining a queue with nothing to
    // admit to would only make the buyer wait for a refusal.
    if let Some(Refusal::Ended) = sale.spec.window_refusal(now) {
        return Err(ApiError::Ended);
    }
    if sold_out(&app, sale.id, now).await? {
        return Err(ApiError::SoldOut);
    }
    let place = app.waiting_room.join(&sale, &user, now).await?;
    Ok(ticket_json(&view(&app, &sale, &room, &user, place, now)))
}

/// `GET /api/sales/{id}/queue/{ticket}`: where the ticket stands; keeps it alive. The buyer is
/// named as for a purchase but not held to the per-buyer rate limit: the server sets the pace
/// (`poll_after_ms`), and a buyer who follows it must never be refused for it.
pub async fn poll<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams((id, ticket)): PathParams<(String, String)>,
    Poller(user): Poller,
) -> Result<Response, ApiError> {
    let (sale, room, now) = open_room(&app, &id).await?;
    if let Some(Refusal::Ended) = sale.spec.window_refusal(now) {
        return Err(ApiError::Ended);
    }
    if sold_out(&app, sale.id, now).await? {
        return Ok(ticket_json(&TicketView {
            ticket,
            state: TicketState::SoldOut,
            ahead: None,
            eta_secs: None,
            poll_after_ms: 0,
            admission_token: None,
            place: None,
            admitted_at_ms: None,
        }));
    }
    let place = app.waiting_room.poll(&sale, &ticket, &user, now).await?;
    Ok(ticket_json(&view(&app, &sale, &room, &user, place, now)))
}

async fn open_room<G: StockGate, S: OrderStore>(
    app: &AppState<G, S>,
    id: &str,
) -> Result<(Arc<Sale>, WaitingRoomSpec, Millis), ApiError> {
    let sale = SaleId::parse(id).ok_or(ApiError::SaleNotFound)?;
    let sale = app.engine.find_sale(sale).await?;
    let room = sale.spec.waiting_room.ok_or(ApiError::NoWaitingRoom)?;
    Ok((sale, room, now_millis()))
}

/// Sold out as the gate counts it: this process's flag first, the shared counter (as read in the
/// last 50 ms) otherwise.
async fn sold_out<G: StockGate, S: OrderStore>(
    app: &AppState<G, S>,
    sale: SaleId,
    now: Millis,
) -> Result<bool, ApiError> {
    if app.engine.gate().known_sold_out(sale, now) {
        return Ok(true);
    }
    Ok(app.engine.remaining_lately(sale, now).await? == 0)
}

fn view<G, S>(
    app: &AppState<G, S>,
    sale: &Sale,
    room: &WaitingRoomSpec,
    user: &UserId,
    place: Place,
    now: Millis,
) -> TicketView {
    // Well inside the time to live, so a buyer who follows it never expires.
    let ttl_ms = u64::from(room.ticket_ttl_secs) * 1000;
    let keep_alive = ttl_ms / 3;
    let (state, ahead, eta_ms, admission_token) = match place.standing {
        Standing::Waiting { ahead, eta_ms } => (TicketState::Waiting, ahead, Some(eta_ms), None),
        Standing::Admitted => {
            let (token, _) = app.admission_tokens.issue(sale.id, user, now);
            (TicketState::Admitted, Some(0), Some(0), Some(token))
        }
        Standing::Expired => (TicketState::Expired, None, None, None),
    };
    let eta_ms = eta_ms.map(|ms| u64::try_from(ms).unwrap_or(0));
    let poll_after_ms = match state {
        TicketState::Waiting => eta_ms.unwrap_or(0) / 4,
        // Admitted: back before the admission token expires, to fetch a fresh one.
        TicketState::Admitted => app.admission_token_ttl_ms / 2,
        TicketState::Expired | TicketState::SoldOut => 0,
    }
    .clamp(500, 5_000)
    .min(keep_alive.max(500));
    TicketView {
        ticket: place.ticket,
        state,
        ahead,
        eta_secs: eta_ms.map(|ms| ms.div_ceil(1000)),
        poll_after_ms: jittered(poll_after_ms),
        admission_token,
        place: place.place,
        admitted_at_ms: place.admitted_at,
    }
}

/// A ticket as JSON, byte for byte what serde_json writes, without its escaping pass over every
/// key and value: joins and polls are the stampede's path, and that pass was most of what a join
/// cost the engine beyond the sold-out answer (callgrind). A string that needs escaping (only a
/// polled ticket id from the path can) goes through serde_json.
fn ticket_json(view: &TicketView) -> Response {
    let mut out = String::with_capacity(192);
    out.push_str("{\"ticket\":");
    push_string(&mut out, &view.ticket);
    out.push_str(",\"state\":\"");
    out.push_str(view.state.as_str());
    out.push_str("\",\"ahead\":");
    push_number(&mut out, view.ahead);
    out.push_str(",\"eta_secs\":");
    push_number(&mut out, view.eta_secs);
    out.push_str(",\"poll_after_ms\":");
    push_number(&mut out, Some(view.poll_after_ms));
    if let Some(token) = &view.admission_token {
        out.push_str(",\"admission_token\":");
        push_string(&mut out, token);
    }
    if let Some(place) = view.place {
        out.push_str(",\"place\":");
        push_number(&mut out, Some(place));
    }
    if let Some(at) = view.admitted_at_ms {
        out.push_str(",\"admitted_at_ms\":");
        out.push_str(itoa::Buffer::new().format(at));
    }
    out.push('}');
    ([(CONTENT_TYPE, "application/json")], out).into_response()
}

fn push_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(s).to_string());
    }
}

fn push_number(out: &mut String, n: Option<u64>) {
    match n {
        Some(n) => out.push_str(itoa::Buffer::new().format(n)),
        None => out.push_str("null"),
    }
}

/// ±20 %, so a crowd that joined together does not poll together.
fn jittered(ms: u64) -> u64 {
    let spread = ms / 5;
    if spread == 0 {
        return ms;
    }
    let random = uuid::Uuid::new_v4().as_u64_pair().1;
    ms - spread + random % (2 * spread + 1)
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use seckill_api::{TicketState, TicketView};

    use super::{jittered, ticket_json};

    /// Written by hand, read as serde_json writes it: every state, every optional field present
    /// and absent, and ticket ids that need escaping.
    #[tokio::test]
    async fn a_ticket_is_written_as_serde_json_writes_it() {
        let base = TicketView {
            ticket: "0123456789abcdef0123456789abcdef".into(),
            state: TicketState::Waiting,
            ahead: None,
            eta_secs: Some(12),
            poll_after_ms: 2_400,
            admission_token: None,
            place: None,
            admitted_at_ms: None,
        };
        let views = [
            base.clone(),
            TicketView {
                state: TicketState::Admitted,
                ahead: Some(0),
                admission_token: Some("AbC-_.9".into()),
                place: Some(u64::MAX),
                admitted_at_ms: Some(-5),
                ..base.clone()
            },
            TicketView {
                state: TicketState::SoldOut,
                ticket: "a \"quoted\" \\ ticket\n\u{7f}é".into(),
                eta_secs: None,
                ..base.clone()
            },
            TicketView {
                state: TicketState::Expired,
                ticket: String::new(),
                ahead: Some(7),
                place: Some(8),
                ..base
            },
        ];
        for view in views {
            let response = ticket_json(&view);
            assert_eq!(response.headers()["content-type"], "application/json");
            let body = to_bytes(response.into_body(), usize::MAX).await.expect("body");
            let expected = serde_json::to_string(&view).expect("serde_json");
            assert_eq!(String::from_utf8_lossy(&body), expected);
        }
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let seen: std::collections::BTreeSet<u64> = (0..200).map(|_| jittered(1_000)).collect();
        assert!(seen.iter().all(|ms| (800..=1_200).contains(ms)));
        assert!(seen.len() > 10, "not jittered: {seen:?}");
    }
}
