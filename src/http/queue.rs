//! The waiting room's routes: joining a sale's queue and polling a ticket. Admission itself is
//! checked on the purchase ([`super::AppState::check_admission`]).

use std::sync::Arc;

use axum::extract::State;
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
    Ok(Json(view(&app, &sale, &room, &user, place, now)).into_response())
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
        return Ok(Json(TicketView {
            ticket,
            state: TicketState::SoldOut,
            ahead: None,
            eta_secs: None,
            poll_after_ms: 0,
            admission_token: None,
            place: None,
            admitted_at_ms: None,
        })
        .into_response());
    }
    let place = app.waiting_room.poll(&sale, &ticket, &user, now).await?;
    Ok(Json(view(&app, &sale, &room, &user, place, now)).into_response())
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
    use super::jittered;

    #[test]
    fn jitter_stays_within_a_fifth() {
        let seen: std::collections::BTreeSet<u64> = (0..200).map(|_| jittered(1_000)).collect();
        assert!(seen.iter().all(|ms| (800..=1_200).contains(ms)));
        assert!(seen.len() > 10, "not jittered: {seen:?}");
    }
}
