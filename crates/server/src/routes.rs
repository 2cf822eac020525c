//! The HTTP and WebSocket routes.

use crate::auth::{may_read_account, may_send, Keys, Principal, RateLimiter};
use crate::config::Limits;
use crate::engine_task::{EngineHandle, Prepared};
use crate::error::ApiError;
use crate::events::Gone;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ballast_engine::{Engine, ParseError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub engine: EngineHandle,
    pub keys: Arc<Keys>,
    pub limiter: Arc<RateLimiter>,
    pub limits: Limits,
}

/// The service's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(crate::dashboard::page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/commands", post(commands))
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/markets", get(markets))
        .route("/v1/markets/{id}", get(market))
        .route("/v1/insurance", get(insurance))
        .route("/v1/risk", get(risk))
        .route("/v1/governance", get(governance))
        .route("/v1/events", get(events))
        .route("/v1/stream", get(stream))
        .route("/v1/state", get(full_state))
        .route("/v1/state/hash", get(state_hash))
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Count every request and time it, by route.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    let response = next.run(req).await;
    state.engine.metrics.request(&route, response.status().as_u16(), start.elapsed());
    response
}

/// The principal of the request's key (Authorization: Bearer KEY, or `?key=` where given),
/// after the rate limit.
fn authenticate(state: &AppState, headers: &HeaderMap, query_key: Option<&str>) -> Result<Principal, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").map(str::trim));
    let Some(key) = bearer.or(query_key) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing API key: send `Authorization: Bearer <key>`",
        ));
    };
    let Some(who) = state.keys.lookup(key) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key"));
    };
    if let Err(wait) = state.limiter.take(&who.name) {
        state.engine.metrics.rate_limited();
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("key '{}' is over its rate limit; retry in {:.0} ms", who.name, (wait * 1000.0).ceil()),
        ));
    }
    Ok(who.clone())
}

fn require_reads_all(who: &Principal, what: &str) -> Result<(), ApiError> {
    if who.role.reads_all() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("role {} may not read {what}", who.role.name())))
    }
}

fn timeout(limits: &Limits) -> Duration {
    Duration::from_millis(limits.request_timeout_ms)
}

/// Run `f` on the engine thread within the request timeout.
async fn read<R: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Engine, u64) -> R + Send + 'static,
) -> Result<R, ApiError> {
    match tokio::time::timeout(timeout(&state.limits), state.engine.read(f)).await {
        Ok(r) => Ok(r?),
        Err(_) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "the engine did not answer in time; retry"))
        }
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    let h = &state.engine.health;
    let ok = h.journal_ok.load(std::sync::atomic::Ordering::Relaxed);
    let last_error = h.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let body = json!({
        "status": if ok { "ok" } else { "journal_failed" },
        "last_seq": h.last_seq.load(std::sync::atomic::Ordering::Relaxed),
        "last_journal_error": last_error,
    });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut out = String::new();
    state.engine.metrics.render(&mut out);
    let gauges = read(&state, crate::metrics_state::render).await?;
    out.push_str(&gauges);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// POST /v1/commands: one command object or an array of them.
/// The reply to POST /v1/commands.
#[derive(serde::Serialize)]
struct Submitted {
    first_seq: u64,
    last_seq: u64,
    results: Vec<crate::engine_task::CommandResult>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandsQuery {
    /// `false`: leave the events out of the reply (seqs, outcomes and reasons only).
    events: Option<bool>,
}

async fn commands(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CommandsQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let who = authenticate(&state, &headers, None)?;
    let max = state.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than the limit of {max} bytes; split the batch"),
        )
    };
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok()) {
        if len > max {
            return Err(too_large());
        }
    }
    let bytes = axum::body::to_bytes(body, max).await.map_err(|_| too_large())?;
    let items = crate::body::split(&bytes).map_err(|e| match e {
        crate::body::BodyError::Malformed(why) => {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {why}"))
        }
        crate::body::BodyError::Shape(why) => ApiError::bad_request("invalid_command", why),
    })?;
    if items.is_empty() {
        return Err(ApiError::bad_request("invalid_command", "the batch is empty"));
    }
    if items.len() > state.limits.max_batch {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("{} commands in one request; the limit is {}", items.len(), state.limits.max_batch),
        ));
    }
    let mut prepared = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let p = Prepared::new(item.to_string()).map_err(|e| match e {
            ParseError::NotJson(why) => {
                ApiError::bad_request("malformed_json", format!("command {i} is not valid JSON: {why}"))
            }
            e => ApiError::bad_request("invalid_command", format!("command {i}: {e}")),
        })?;
        may_send(&who, p.command()).map_err(|why| ApiError::forbidden(format!("command {i}: {why}")))?;
        prepared.push(p);
    }
    match tokio::time::timeout(timeout(&state.limits), state.engine.submit(prepared)).await {
        Ok(Ok(mut results)) => {
            if q.events == Some(false) {
                for r in &mut results {
                    r.events = None;
                }
            }
            let first_seq = results.first().map_or(0, |r| r.seq);
            let last_seq = results.last().map_or(0, |r| r.seq);
            // Serialized straight from the results (no intermediate JSON tree).
            Ok(Json(Submitted { first_seq, last_seq, results }).into_response())
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "no durability acknowledgement in time; the commands may still become durable: check GET /v1/state/hash or /v1/events before resending",
        )),
    }
}

async fn account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = authenticate(&state, &headers, None)?;
    if !may_read_account(&who, &id) {
        return Err(ApiError::forbidden(format!("key '{}' may not read account '{id}'", who.name)));
    }
    let id2 = id.clone();
    let found = read(&state, move |engine, seq| -> Result<Option<Value>, String> {
        let account = engine.account_state(&id2).map_err(|e| e.to_string())?;
        Ok(account.map(|a| json!({ "seq": seq, "ts": engine.now(), "account": id2, "view": a })))
    })
    .await?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "view_failed", e))?;
    match found {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(ApiError::not_found(format!("no account '{id}'"))),
    }
}

/// A part of the state, computed on the engine thread; `seq` is added to the object.
async fn view_part(
    state: &AppState,
    part: fn(&ballast_engine::Engine) -> Result<Value, ballast_engine::Reject>,
) -> Result<Response, ApiError> {
    let v = read(state, move |engine, seq| part(engine).map(|v| (seq, v)).map_err(|e| e.to_string()))
        .await?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "view_failed", e))?;
    let (seq, mut body) = v;
    if let Value::Object(m) = &mut body {
        m.insert("seq".into(), json!(seq));
    }
    Ok(Json(body).into_response())
}

async fn markets(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authenticate(&state, &headers, None)?;
    view_part(&state, |e| Ok(json!({ "ts": e.now(), "markets": e.markets_state() }))).await
}

async fn market(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authenticate(&state, &headers, None)?;
    let id2 = id.clone();
    let found = read(&state, move |engine, seq| -> Result<Option<Value>, String> {
        Ok(engine.market_state(&id2).map(|m| json!({ "seq": seq, "ts": engine.now(), "market": id2, "view": m })))
    })
    .await?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "view_failed", e))?;
    found.map(|v| Json(v).into_response()).ok_or_else(|| ApiError::not_found(format!("no market '{id}'")))
}

async fn insurance(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authenticate(&state, &headers, None)?;
    view_part(&state, |e| {
        let (insurance_funds, backstop) = e.insurance_state()?;
        Ok(json!({ "ts": e.now(), "insurance_funds": insurance_funds, "backstop": backstop }))
    })
    .await
}

async fn risk(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RiskQuery>,
) -> Result<Response, ApiError> {
    let who = authenticate(&state, &headers, None)?;
    let closest = if who.role.reads_all() { q.closest.unwrap_or(20).min(1000) } else { 0 };
    let v = read(&state, move |engine, seq| crate::risk::summary(engine, seq, closest))
        .await?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "view_failed", e))?;
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RiskQuery {
    /// How many accounts closest to liquidation to list (readers of every account only).
    closest: Option<usize>,
}

async fn governance(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authenticate(&state, &headers, None)?;
    let v = read(&state, |engine, seq| json!({ "seq": seq, "ts": engine.now(), "governance": engine.governance() }))
        .await?;
    Ok(Json(v).into_response())
}

async fn full_state(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let who = authenticate(&state, &headers, None)?;
    require_reads_all(&who, "the whole state")?;
    view_part(&state, |e| Ok(serde_json::to_value(e.view()?).unwrap_or(Value::Null))).await
}

async fn state_hash(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authenticate(&state, &headers, None)?;
    let v = read(&state, |engine, seq| json!({ "seq": seq, "state_hash": engine.state_hash() })).await?;
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    from: u64,
    limit: Option<usize>,
    /// For WebSocket clients that cannot set headers (browsers).
    key: Option<String>,
}

fn gone(g: Gone, from: u64) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "events_gone",
        format!(
            "events from seq {from} are no longer in memory (the oldest complete seq is {}); read the state with the REST queries and follow from there",
            g.oldest
        ),
    )
}

async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let who = authenticate(&state, &headers, q.key.as_deref())?;
    require_reads_all(&who, "the event stream")?;
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let records = state.engine.events.since(q.from, limit).map_err(|g| gone(g, q.from))?;
    let mut body = String::with_capacity(records.iter().map(|r| r.1.len() + 1).sum::<usize>() + 32);
    body.push_str("{\"events\":[");
    for (i, (_, r)) in records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r);
    }
    body.push_str("]}");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// GET /v1/stream?from=SEQ (WebSocket): the events from SEQ, then live ones.
async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let who = authenticate(&state, &headers, q.key.as_deref())?;
    require_reads_all(&who, "the event stream")?;
    let (backlog, rx) = state.engine.events.subscribe(q.from, usize::MAX).map_err(|g| gone(g, q.from))?;
    Ok(ws.on_upgrade(move |socket| follow(socket, backlog, rx)))
}

async fn follow(
    mut socket: WebSocket,
    backlog: Vec<crate::events::Record>,
    mut rx: tokio::sync::broadcast::Receiver<crate::events::Record>,
) {
    let mut last = 0;
    for (seq, r) in backlog {
        last = seq;
        if socket.send(Message::Text(r.to_string().into())).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok((seq, r)) => {
                    if seq < last {
                        continue;
                    }
                    last = seq;
                    if socket.send(Message::Text(r.to_string().into())).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let why = format!("{{\"error\":{{\"code\":\"lagged\",\"message\":\"this client fell {n} events behind and was dropped; reconnect with from={}\"}}}}", last + 1);
                    let _ = socket.send(Message::Text(why.into())).await;
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
