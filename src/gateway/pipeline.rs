//! The request path, phase by phase: check the head, classify, authenticate, read the body, decide (looking up what the decision needs), forward, stream the answer back; then count and audit.
//!
//! Cold branches (the management API, shadow comparison, search paging, upstream lookups on a
//! cache miss, filtered lists) are awaited through `Box::pin`: their state would otherwise be
//! laid out inside the one per-request future that hyper moves on every poll, and that future's
//! size showed up as memcpy in the instruction counts of every request (docs/benchmarks.md).

use super::*;
use crate::routes::RouteMatch;

/// An authorized request on its way out: its route, how many of the route's event it makes,
/// its head and its body.
pub(super) struct Decided<'a> {
    route: &'a RouteMatch,
    units: u32,
    parts: http::request::Parts,
    raw: Bytes,
}

/// A response, with who asked and what was decided (for metrics and the audit log).
pub(super) type Answered = (Response<RespBody>, Option<Arc<User>>, Option<Decision>);
/// A finished request: the response, who asked, what was decided, the decision label and the
/// limit that refused it (if one did).
type Settled = (
    Response<RespBody>,
    Option<Arc<User>>,
    Option<Decision>,
    &'static str,
    Option<Box<LimitHit>>,
);
/// A refusal, with who asked and what was decided, as far as the request got.
pub(super) type Refused = (GatewayError, Option<Arc<User>>, Option<Decision>);

impl Gateway {
    /// Handle one request end to end. Never panics; every failure is a response.
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: Peer,
    ) -> Response<RespBody> {
        let started = std::time::Instant::now();
        self.metrics.in_flight.inc();
        let method = req.method().clone();
        let uri = req.uri().clone();
        let request_id = request_id(&mut req);
        let policy = self.policy.load_full();
        let h1_with_body = h1_with_body(&req);
        let result = match host_check(&req) {
            Ok(()) => self.handle_inner(req, &peer, &policy).await,
            Err(e) => Err((e, None, None)),
        };
        let (mut resp, user, decision, label, limit) = self.settle(result);
        // An HTTP/1 refusal may leave the request body unread; then the connection cannot be
        // reused, and the client must be told so rather than lose its next request.
        if h1_with_body && label != "allow" && label != "public" {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.config.policy_version_header {
            resp.headers_mut().insert(
                HeaderName::from_static("x-graphguard-policy-version"),
                policy.version_header.clone(),
            );
        }
        resp.headers_mut().insert(X_REQUEST_ID, request_id.clone());
        let elapsed = started.elapsed();
        self.count(&resp, decision.as_ref(), label, elapsed);
        let audited = label != "allow" && label != "public" || self.sample_allowed();
        if audited && tracing::enabled!(target: "graphguard::audit", tracing::Level::INFO) {
            self.audit(
                request_id.to_str().unwrap_or("-"),
                method.as_str(),
                uri.path(),
                resp.status().as_u16(),
                label,
                user.as_deref(),
                decision.as_ref(),
                limit.as_deref(),
                &policy,
                elapsed,
            );
        }
        resp
    }

    /// The response and its decision label (`allow`, `public`, `deny` or `error`); an
    /// authentication failure is counted by its typed reason.
    fn settle(&self, result: Result<Answered, Refused>) -> Settled {
        match result {
            Ok((r, u, d)) => {
                let label = if u.is_some() { "allow" } else { "public" };
                (r, u, d, label, None)
            }
            Err((e, u, d)) => {
                if e.status == StatusCode::UNAUTHORIZED && u.is_none() {
                    self.metrics
                        .auth_failures
                        .get_or_create(&ReasonLabel {
                            reason: e.auth_failure.map_or("other", AuthFailure::label).into(),
                        })
                        .inc();
                }
                let label = if e.side == Side::Client {
                    "deny"
                } else {
                    "error"
                };
                (error_response(&e), u, d, label, e.limit)
            }
        }
    }

    /// Count the request by its first event, decision and status, and its duration.
    fn count(
        &self,
        resp: &Response<RespBody>,
        decision: Option<&Decision>,
        label: &'static str,
        elapsed: Duration,
    ) {
        let first = decision.and_then(|d| d.steps.first().map(|s| s.event));
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                resource: first.map_or("none", |e| e.resource.as_str()),
                action: first.map_or("none", |e| e.action.as_str()),
                decision: label,
                status: resp.status().as_u16(),
            })
            .inc();
        self.metrics.request_seconds.observe(elapsed.as_secs_f64());
        self.metrics.in_flight.dec();
    }

    /// Account for a request hyper refused before it reached the gateway (a malformed or
    /// oversized HTTP/1 head), answered with `status` by [`crate::gateway::malformed_head`]: counted and
    /// audited as a denial with no method, path or user.
    pub fn record_unparsed(&self, status: StatusCode, request_id: &HeaderValue) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                resource: "none",
                action: "none",
                decision: "deny",
                status: status.as_u16(),
            })
            .inc();
        if tracing::enabled!(target: "graphguard::audit", tracing::Level::INFO) {
            let policy = self.policy.load();
            self.audit(
                request_id.to_str().unwrap_or("-"),
                "-",
                "-",
                status.as_u16(),
                "deny",
                None,
                None,
                None,
                &policy,
                Duration::ZERO,
            );
        }
    }

    /// Whether to log this allowed decision (`audit_sample_allowed`; denials always log).
    pub(super) fn sample_allowed(&self) -> bool {
        let rate = self.config.audit_sample_allowed;
        if rate >= 1.0 {
            return true;
        }
        if rate <= 0.0 {
            return false;
        }
        let n = self
            .audit_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed) as f64;
        (n * rate).floor() != ((n - 1.0) * rate).floor()
    }

    /// One structured audit event per decision: who, what, which handlers and access
    /// policies decided, the filter and stamping applied, the outcome. Never credentials.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn audit(
        &self,
        request_id: &str,
        method: &str,
        path: &str,
        status: u16,
        label: &str,
        user: Option<&User>,
        decision: Option<&Decision>,
        limit: Option<&LimitHit>,
        policy: &Policy,
        elapsed: Duration,
    ) {
        let line = AuditLine {
            request_id,
            method,
            path,
            status,
            decision: label,
            user: user.map_or("-", |u| u.identity.as_str()),
            steps: decision.map_or(&[], |d| d.steps.as_slice()),
            access: decision.map_or(&[], |d| d.access.as_slice()),
            limit,
            policy: &policy.version,
            elapsed,
        };
        if let Some(sink) = &self.audit_out {
            thread_local! {
                static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            LINE.with_borrow_mut(|buf| {
                buf.clear();
                line.write_json(std::time::SystemTime::now(), buf);
                sink.write_line(buf);
            });
            return;
        }
        tracing::info!(
            target: "graphguard::audit",
            request_id = %line.request_id,
            method = %line.method,
            path = %line.path,
            status = line.status,
            decision = line.decision,
            user = line.user,
            handlers = %line.handlers(),
            access = %line.access(),
            filters = %line.filters(),
            stamped = %line.stamped(),
            limit = limit.map(|l| l.name.as_str()),
            limit_key = limit.map(|l| l.key.as_str()),
            policy = %line.policy,
            elapsed_us = elapsed.as_micros() as u64,
            "decision"
        );
    }

    /// The phases of one request after the head checks: classify (public and blocked routes
    /// are admitted or refused before authentication, as on the server), authenticate,
    /// accept the route, read the body, decide, respond.
    pub(super) async fn handle_inner(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        policy: &Arc<Policy>,
    ) -> Result<Answered, Refused> {
        let fail = |e: GatewayError| (e, None, None);
        let path = req.uri().path().to_string();
        routes::check_path(&path).map_err(fail)?;
        if path.starts_with(MANAGEMENT_PREFIX) {
            return Box::pin(self.manage(req, policy)).await;
        }
        let classified = routes::classify(req.method(), &path);
        match classified
            .as_ref()
            .map(|m| routes::admission(m, &path, &policy.public_paths))
        {
            Ok(Admission::Public) => {
                let r = self.forward_public(req, peer, policy).await;
                return r.map(|r| (r, None, None)).map_err(fail);
            }
            Ok(Admission::Blocked) => return Err(fail(Admission::refusal())),
            Ok(Admission::Authenticate) | Err(_) => {}
        }
        let user = authn::authenticate(&policy.authenticators, req.headers())
            .await
            .map_err(fail)?;
        let with_user = |e: GatewayError| (e, Some(user.clone()), None);
        let route = accept(classified, req.headers()).map_err(with_user)?;
        let (parts, body) = req.into_parts();
        let mut held = self.body_budget.reservation();
        let raw = self
            .read_body(&parts.headers, body, &mut held)
            .await
            .map_err(with_user)?;
        let (decision, units) = self
            .decide(policy, &user, &route, parts.uri.query(), &raw)
            .await
            .map_err(with_user)?;
        let request = Decided {
            route: &route,
            units,
            parts,
            raw,
        };
        self.respond(policy, request, decision, user, peer).await
    }

    /// The management API: off (404) without a policy store and `settings.management`; else
    /// an authenticated caller holding the management permission. `X-API-Key`, which
    /// LangSmith's clients send, is read as a bearer token.
    async fn manage(
        &self,
        mut req: Request<Incoming>,
        policy: &Arc<Policy>,
    ) -> Result<Answered, Refused> {
        let fail = |e: GatewayError| (e, None, None);
        let (Some(api), Some(permission)) = (self.management.get(), &policy.management) else {
            return Err(fail(GatewayError::not_found(
                "The management API is not enabled (settings.management and --policy-store)",
            )));
        };
        api_key_as_bearer(req.headers_mut());
        let user = authn::authenticate(&policy.authenticators, req.headers())
            .await
            .map_err(fail)?;
        let with_user = |e: GatewayError| (e, Some(user.clone()), None);
        if !(user.has_permission(permission) || policy.access.role_grants(&user, permission)) {
            return Err(with_user(GatewayError::forbidden(format!(
                "Forbidden: managing roles and access policies needs the permission {permission}"
            ))));
        }
        let (parts, body) = req.into_parts();
        let mut held = self.body_budget.reservation();
        let raw = self
            .read_body(&parts.headers, body, &mut held)
            .await
            .map_err(with_user)?;
        let answer = api.answer(&parts, &raw, policy, &user).await;
        Ok((answer.map(full), Some(user), None))
    }

    /// Decide the request, looking up what the decision needs (the lookup cache first), and
    /// let the shadow policy decide the same request. Also how many of the route's event the
    /// request makes (the items of a run batch; else 1), which limits count.
    async fn decide(
        &self,
        policy: &Policy,
        user: &User,
        route: &RouteMatch,
        query: Option<&str>,
        raw: &[u8],
    ) -> Result<(Decision, u32), GatewayError> {
        let parsed = decide::parse_body(route, raw)?;
        let units = match &parsed {
            decide::Body::Array(items) => u32::try_from(items.len()).unwrap_or(u32::MAX),
            _ => 1,
        };
        let input = Input {
            route,
            query,
            body: &parsed,
        };
        let started = std::time::Instant::now();
        let (decision, facts) = self.decide_with_lookups(policy, user, &input).await?;
        self.metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Some(shadow) = self.shadow.load_full() {
            Box::pin(self.shadow_compare(&shadow, policy, user, &input, facts, &decision)).await;
        }
        Ok((decision, units))
    }

    /// The decision loop: decide, and while the decision needs a resource, look it up.
    async fn decide_with_lookups(
        &self,
        policy: &Policy,
        user: &User,
        input: &Input<'_>,
    ) -> Result<(Decision, Facts), GatewayError> {
        let mut facts = Facts::default();
        let cached = |t: &Target| {
            let hit = self.upstream.cached(t);
            if hit.is_some() {
                self.metrics.lookup_hits.inc();
            }
            hit
        };
        loop {
            match decide::decide_with_cache(policy, user, input, &facts, &cached) {
                Next::Done(d) => return Ok((d, facts)),
                Next::Need(t) => {
                    let (f, hit) = Box::pin(self.upstream.lookup_with_hit(&t)).await?;
                    if hit {
                        self.metrics.lookup_hits.inc();
                    } else {
                        self.metrics.lookup_misses.inc();
                    }
                    facts.insert(t, f);
                }
            }
        }
    }

    /// Carry out the decision: refuse, reply, or (once the limits pass) forward and stream the
    /// answer back.
    async fn respond(
        &self,
        policy: &Policy,
        request: Decided<'_>,
        mut decision: Decision,
        user: Arc<User>,
        peer: &Peer,
    ) -> Result<Answered, Refused> {
        // The outcome (with a rewritten body, possibly megabytes) moves out of the decision
        // rather than being copied; what the audit log reads (steps, access) stays.
        let outcome = std::mem::replace(
            &mut decision.outcome,
            Outcome::Reply(Reply {
                status: StatusCode::OK,
                body: Vec::new(),
                headers: Vec::new(),
            }),
        );
        let outcome = match outcome {
            Outcome::Refuse(e) => return Err((e, Some(user), Some(decision))),
            authorized => authorized,
        };
        let Decided {
            route,
            units,
            parts,
            raw,
        } = request;
        // Authorized: the limits count it, whether the gateway answers it or the server does.
        let admitted = match self.limit(policy, route, units, &user).await {
            Ok(a) => a,
            Err(e) => return Err((e, Some(user), Some(decision))),
        };
        let fwd = match outcome {
            Outcome::Forward(fwd) => fwd,
            Outcome::Reply(r) => {
                let r = self.hold(admitted, reply_response(r));
                return Ok((r, Some(user), Some(decision)));
            }
            Outcome::Refuse(e) => return Err((e, Some(user), Some(decision))),
        };
        match self
            .forward_decided(policy, parts, raw, fwd, &user, peer)
            .await
        {
            Ok(r) => Ok((self.hold(admitted, r), Some(user), Some(decision))),
            Err(e) => Err((e, Some(user), Some(decision))),
        }
    }

    /// Forward an allowed request, then give its body's buffer back and invalidate what the
    /// request may have written.
    async fn forward_decided(
        &self,
        policy: &Policy,
        parts: http::request::Parts,
        raw: Bytes,
        mut fwd: Forward,
        user: &Arc<User>,
        peer: &Peer,
    ) -> Result<Response<RespBody>, GatewayError> {
        let invalidate = std::mem::take(&mut fwd.invalidate);
        let kept = raw.clone();
        let r = self
            .forward(policy, parts, raw, fwd, Some(user.as_ref()), peer)
            .await;
        // The upstream has answered: the body's buffer is free again unless the
        // connection still holds a piece of it.
        buffers::give_back(kept);
        // Whether or not the forward succeeded, the write may have reached the upstream.
        for t in &invalidate {
            self.upstream.invalidate(t);
        }
        self.tell_replicas(invalidate);
        r
    }

    /// Tell every replica on the bus (this one too) that these lookups are stale, off the
    /// request path: the cache's TTL bounds what a lost message costs.
    fn tell_replicas(&self, stale: Vec<Target>) {
        let Some(bus) = self.bus.clone() else { return };
        if stale.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for t in stale {
                let key = t.path();
                // A Redis that just came back is reconnected in the background: a few tries.
                for pause in [50, 200, 500, 0] {
                    match bus.publish(&key).await {
                        Ok(_) => break,
                        Err(e) if pause == 0 => {
                            tracing::warn!(error = %e, "could not tell the other replicas a lookup is stale");
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(pause)).await,
                    }
                }
            }
        });
    }

    /// Forward a public route: no user, no handler, and no body (anyone may call a public
    /// route, so an anonymous client cannot make the gateway hold a body).
    pub(super) async fn forward_public(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        policy: &Arc<Policy>,
    ) -> Result<Response<RespBody>, GatewayError> {
        let fwd = Forward {
            body: None,
            query: None,
            response: ResponsePlan::Stream,
            invalidate: Vec::new(),
            authenticated: false,
        };
        let (parts, body) = req.into_parts();
        if !hyper::body::Body::is_end_stream(&body) {
            return Err(GatewayError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Public routes take no request body",
            ));
        }
        self.forward(policy, parts, Bytes::new(), fwd, None, peer)
            .await
    }

    /// A declared `Content-Length`: within the size limit (413), and reserved in the budget
    /// of body bytes held at once (503) before a byte is read. The length, 0 if undeclared.
    fn reserve_declared(
        &self,
        headers: &HeaderMap,
        held: &mut Reservation<'_>,
    ) -> Result<usize, GatewayError> {
        let Some(cl) = headers.get(header::CONTENT_LENGTH) else {
            return Ok(0);
        };
        let n: u64 = cl
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GatewayError::bad_request("Invalid Content-Length"))?;
        if n > self.config.max_body as u64 {
            return Err(GatewayError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body larger than {} bytes", self.config.max_body),
            ));
        }
        if !held.grow(n as usize) {
            return Err(budget_spent(&self.body_budget));
        }
        Ok(n as usize)
    }

    /// Read the whole request body within the size limit (413 before the upstream sees it) and
    /// within the budget of body bytes held at once (503 before a byte is read, when its
    /// declared length does not fit; a chunked body is reserved piece by piece).
    pub(super) async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Incoming,
        held: &mut Reservation<'_>,
    ) -> Result<Bytes, GatewayError> {
        let too_large = || {
            GatewayError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body larger than {} bytes", self.config.max_body),
            )
        };
        let expected = self.reserve_declared(headers, held)?;
        // Nothing to read (no Content-Length or a zero one, no chunked body, h2 end of stream):
        // no timer, no collection.
        if hyper::body::Body::is_end_stream(&body) {
            return Ok(Bytes::new());
        }
        // One piece is the body as it is; more are gathered into a reused buffer.
        let gather = async {
            let mut body = Limited::new(body, self.config.max_body);
            let mut first: Option<Bytes> = None;
            let mut gathered: Option<BytesMut> = None;
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame?.into_data() else {
                    continue; // trailers
                };
                let arrived = first.as_ref().map_or(0, Bytes::len)
                    + gathered.as_ref().map_or(0, BytesMut::len)
                    + data.len();
                if arrived > held.bytes() && !held.grow(arrived - held.bytes()) {
                    return Ok(Err(budget_spent(&self.body_budget)));
                }
                match (&mut gathered, &first) {
                    (Some(g), _) => g.extend_from_slice(&data),
                    (None, None) => first = Some(data),
                    (None, Some(f)) => {
                        let mut g = buffers::take_for(expected, f.len() + data.len());
                        g.extend_from_slice(f);
                        g.extend_from_slice(&data);
                        gathered = Some(g);
                        first = None;
                    }
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Ok(match gathered {
                Some(g) => g.freeze(),
                None => first.unwrap_or_default(),
            }))
        };
        match tokio::time::timeout(self.config.body_timeout, gather).await {
            Err(_) => Err(GatewayError::new(
                StatusCode::REQUEST_TIMEOUT,
                "Request body not received in time",
            )),
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    Err(too_large())
                } else {
                    Err(GatewayError::bad_request("Request body incomplete"))
                }
            }
        }
    }

    /// The request to send upstream: the client's method, the authorized path (and the
    /// rewritten query, if any), the client's headers minus hop-by-hop, spoofable, credential
    /// and gateway-owned ones, plus the user and forwarding headers.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn upstream_request(
        &self,
        policy: &Policy,
        parts: http::request::Parts,
        query: Option<&str>,
        body: Outgoing,
        user: Option<&User>,
        peer: &Peer,
    ) -> Result<Request<UpBody>, GatewayError> {
        let http::request::Parts {
            method,
            uri,
            headers,
            ..
        } = parts;
        // The target's authority (absolute form, h2 `:authority`) wins over Host (RFC 9112 3.2.2).
        let client_host = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| headers.get(header::HOST).cloned());
        let mut headers = forwardable_headers(policy, headers);
        for a in &policy.authenticators {
            a.strip_credentials(&mut headers);
        }
        if let Some(u) = user {
            insert_user_headers(policy, u, &mut headers);
        }
        headers.insert(X_FORWARDED_FOR, peer.forwarded_for.clone());
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(h) = client_host {
            headers.insert(X_FORWARDED_HOST, h);
        }
        if !body.is_empty() || method != Method::GET && method != Method::HEAD {
            // The client's own value when it is exactly this body's length (no allocation).
            let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
            let same = lengths.next().is_some_and(|v| is_length(v, body.len()));
            if !same || lengths.next().is_some() {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            }
        } else {
            headers.remove(header::CONTENT_LENGTH);
        }
        headers.insert(header::HOST, self.upstream.host().clone());
        let path_and_query = upstream_target(query, &uri)?;
        let mut req = Request::new(body.map_err(|never| match never {}).boxed_unsync());
        *req.method_mut() = method;
        // Origin form: the pool sends to its one upstream.
        *req.uri_mut() = http::Uri::from(path_and_query);
        *req.headers_mut() = headers;
        Ok(req)
    }

    pub(super) async fn forward(
        &self,
        policy: &Policy,
        parts: http::request::Parts,
        raw: Bytes,
        fwd: Forward,
        user: Option<&User>,
        peer: &Peer,
    ) -> Result<Response<RespBody>, GatewayError> {
        let query = fwd.query.as_deref();
        let body = Outgoing::for_request(raw, fwd.body);
        match fwd.response {
            ResponsePlan::Search(plan) => {
                Box::pin(self.search(policy, body.into_bytes(), &plan, user)).await
            }
            ResponsePlan::Stream => {
                let req = self.upstream_request(policy, parts, query, body, user, peer)?;
                let t = std::time::Instant::now();
                let resp = self.upstream.send(req).await?;
                self.metrics
                    .upstream_seconds
                    .observe(t.elapsed().as_secs_f64());
                Ok(self.stream_back(resp))
            }
            ResponsePlan::FilterList { filter, empty } => {
                let req = self.upstream_request(policy, parts, query, body, user, peer)?;
                let resp = self.upstream.send(req).await?;
                Box::pin(self.filtered(resp, |item| filter.matches(metadata_ref(item)), empty))
                    .await
            }
            ResponsePlan::StoreItems { filter, access } => {
                let req = self.upstream_request(policy, parts, query, body, user, peer)?;
                let resp = self.upstream.send(req).await?;
                let keep = |item: &Value| {
                    let value = item
                        .get("value")
                        .and_then(Value::as_object)
                        .unwrap_or_else(|| empty_map());
                    filter.as_ref().is_none_or(|f| f.matches(value))
                        && user.is_none_or(|u| {
                            access.iter().all(|e| policy.access.allows(u, *e, value))
                        })
                };
                Box::pin(self.filtered(resp, keep, None)).await
            }
        }
    }

    /// Stream an upstream response back chunk by chunk (SSE included), with an idle timeout.
    pub(super) fn stream_back(&self, resp: Response<PooledBody>) -> Response<RespBody> {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body =
            crate::gateway::idle::IdleTimeout::new(body, self.config.idle_timeout).boxed_unsync();
        Response::from_parts(parts, body)
    }

    pub(super) async fn read_upstream(
        &self,
        resp: Response<PooledBody>,
    ) -> Result<(http::response::Parts, Bytes), GatewayError> {
        let (parts, body) = resp.into_parts();
        let body = crate::gateway::idle::IdleTimeout::new(body, self.config.idle_timeout);
        let bytes = Limited::new(body, self.config.max_filtered_response)
            .collect()
            .await
            .map_err(|_| {
                GatewayError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "Upstream response unreadable or too large",
                )
            })?
            .to_bytes();
        Ok((parts, bytes))
    }
}

/// 503 for a body the budget of bytes held at once cannot cover.
fn budget_spent(budget: &BodyBudget) -> GatewayError {
    let mut e = GatewayError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "graphguard is holding its limit of {} request-body bytes; retry shortly",
            budget.limit()
        ),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"));
    e.side = Side::Internal;
    e
}

/// The classified route, if the request may take it: its ids valid, no protocol upgrade.
fn accept(
    classified: Result<RouteMatch, GatewayError>,
    headers: &HeaderMap,
) -> Result<RouteMatch, GatewayError> {
    let route = classified?;
    routes::validate_params(&route)?;
    if headers.get(header::UPGRADE).is_some() {
        return Err(GatewayError::bad_request(
            "Protocol upgrades are not supported through graphguard",
        ));
    }
    Ok(route)
}

/// Whether this is an HTTP/1 request with a body (which a refusal may leave unread).
fn h1_with_body(req: &Request<Incoming>) -> bool {
    req.version() < http::Version::HTTP_2
        && (req.headers().contains_key(header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0"))
}

/// The user's headers (identity, display name, permissions, roles) under the policy's names.
fn insert_user_headers(policy: &Policy, u: &User, headers: &mut HeaderMap) {
    let uh = &policy.user_headers;
    let v = u.header_values();
    for (name, value) in [
        (&uh.identity, &v.identity),
        (&uh.display_name, &v.display_name),
        (&uh.permissions, &v.permissions),
        (&uh.roles, &v.roles),
    ] {
        if let Some(value) = value {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// The path as authorized, with the decision's query (or the client's, whose bytes an
/// unchanged query shares).
fn upstream_target(
    query: Option<&str>,
    uri: &http::Uri,
) -> Result<http::uri::PathAndQuery, GatewayError> {
    Ok(match (query, uri.path_and_query()) {
        (None, Some(pq)) if pq.query() != Some("") => pq.clone(),
        (None, None) => http::uri::PathAndQuery::from_static("/"),
        (None, Some(_)) => http::uri::PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(
            uri.path().as_bytes(),
        ))
        .map_err(|e| GatewayError::bad_request(format!("invalid request target: {e}")))?,
        (Some(q), _) => {
            let pq = if q.is_empty() {
                uri.path().to_owned()
            } else {
                format!("{}?{q}", uri.path())
            };
            http::uri::PathAndQuery::from_maybe_shared(Bytes::from(pq))
                .map_err(|e| GatewayError::bad_request(format!("invalid request target: {e}")))?
        }
    })
}

/// `X-API-Key: K` as `Authorization: Bearer K` when no `Authorization` is given.
fn api_key_as_bearer(headers: &mut HeaderMap) {
    if headers.contains_key(header::AUTHORIZATION) {
        return;
    }
    let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) else {
        return;
    };
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", key.trim())) {
        headers.insert(header::AUTHORIZATION, v);
    }
}
