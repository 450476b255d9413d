//! Searches the gateway completes itself: result filters the agent server cannot apply, evaluated on pages of results within a budget of upstream requests.

use super::*;

impl Gateway {
    /// Filter a JSON response: an array, or an object with `items` (store search).
    pub(super) async fn filtered(
        &self,
        resp: Response<PooledBody>,
        keep: impl Fn(&Value) -> bool,
        empty: Option<GatewayError>,
    ) -> Result<Response<RespBody>, GatewayError> {
        let (mut parts, bytes) = self.read_upstream(resp).await?;
        if !parts.status.is_success() {
            strip_hop_by_hop(&mut parts.headers);
            return Ok(Response::from_parts(parts, full(bytes)));
        }
        let bad = || {
            GatewayError::upstream(
                StatusCode::BAD_GATEWAY,
                "Upstream answered an unexpected shape",
            )
        };
        let mut v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let items = match &mut v {
            Value::Array(items) => items,
            Value::Object(o) => match o.get_mut("items") {
                Some(Value::Array(items)) => items,
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        items.retain(|i| keep(i));
        if items.is_empty() {
            if let Some(e) = empty {
                return Err(e);
            }
        }
        let out = serde_json::to_vec(&v).map_err(|e| GatewayError::internal(e.to_string()))?;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::CONTENT_LENGTH);
        Ok(Response::from_parts(parts, full(out)))
    }

    /// A search the upstream cannot filter exactly: page through from offset 0 and keep what
    /// passes, then answer the client's window with pagination headers computed the way the
    /// server computes them.
    pub(super) async fn search(
        &self,
        policy: &Policy,
        body: Bytes,
        plan: &SearchPlan,
        user: Option<&User>,
    ) -> Result<Response<RespBody>, GatewayError> {
        let mut spent = Spent {
            requests: 0,
            limit: policy.search_max_requests,
        };
        let base = ObjectBody::parse(&body, decide::MAX_JSON_DEPTH)
            .map_err(|_| GatewayError::internal("rewritten search body does not parse"))?;
        let want = plan.offset.saturating_add(plan.limit);
        let mut kept: Vec<Value> = Vec::new();
        let mut more = false;
        for page in 0.. {
            if let Err(e) = spent.one() {
                // The client's window is complete; only whether more exist is unknown.
                if !plan.count && kept.len() as u64 >= want {
                    more = true;
                    break;
                }
                return Err(e);
            }
            let items = match self.search_page(plan, &base, page).await? {
                Page::Items(items) => items,
                Page::Refused(r) => return Ok(r),
            };
            let n = items.len() as u64;
            for item in items {
                if self.passes(policy, plan, user, &item, &mut spent).await? {
                    if !plan.count && kept.len() as u64 >= want {
                        more = true;
                        break;
                    }
                    kept.push(item);
                }
            }
            if more || n < PAGE {
                break;
            }
        }
        search_answer(plan, kept, more, want)
    }

    /// One page of upstream results (`PAGE` items from `page * PAGE`), or the upstream's
    /// refusal passed through.
    async fn search_page(
        &self,
        plan: &SearchPlan,
        base: &ObjectBody<'_>,
        page: u64,
    ) -> Result<Page, GatewayError> {
        let limit = PAGE.to_string();
        let offset = (page * PAGE).to_string();
        let b = base.splice(&[
            ("limit", Some(limit.as_bytes())),
            ("offset", Some(offset.as_bytes())),
        ]);
        let (status, headers, bytes) = self.upstream.json(Method::POST, plan.path, Some(b)).await?;
        if !status.is_success() {
            let mut r = Response::new(full(bytes));
            *r.status_mut() = status;
            if let Some(ct) = headers.get(header::CONTENT_TYPE) {
                r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
            }
            return Ok(Page::Refused(r));
        }
        serde_json::from_slice(&bytes)
            .map(Page::Items)
            .map_err(|_| {
                GatewayError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "Upstream search answered an unexpected shape",
                )
            })
    }

    pub(super) async fn passes(
        &self,
        policy: &Policy,
        plan: &SearchPlan,
        user: Option<&User>,
        item: &Value,
        spent: &mut Spent,
    ) -> Result<bool, GatewayError> {
        let md = metadata_ref(item);
        if let Some(f) = &plan.filter {
            if !f.matches(md) {
                return Ok(false);
            }
        }
        if let Some(u) = user {
            if !plan.access.iter().all(|e| policy.access.allows(u, *e, md)) {
                return Ok(false);
            }
        }
        if let Some(tf) = &plan.thread_filter {
            if let Some(tid) = item.get("thread_id").and_then(Value::as_str) {
                let t = Target::Thread(tid.to_string());
                let thread = match self.upstream.cached(&t) {
                    Some(f) => f,
                    None => {
                        spent.one()?;
                        self.upstream.lookup(&t).await?
                    }
                };
                let md = thread.as_deref().map_or(empty_map(), metadata_ref);
                if !tf.matches(md) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// The upstream requests a gateway-completed search has made, against its bound
/// (`settings.search.max_upstream_requests`).
pub(super) struct Spent {
    requests: u32,
    limit: u32,
}

impl Spent {
    /// Count one more upstream request, or refuse the search: rather than an answer that
    /// silently misses results, the client learns that the search is too broad for the gateway.
    fn one(&mut self) -> Result<(), GatewayError> {
        if self.requests >= self.limit {
            return Err(GatewayError::bad_request(format!(
                "Search too broad for graphguard to filter: it needs more than {} upstream \
                 requests (settings.search.max_upstream_requests); narrow it with metadata the \
                 agent server can match, or a smaller offset",
                self.limit
            )));
        }
        self.requests += 1;
        Ok(())
    }
}

/// Upstream results fetched per page.
const PAGE: u64 = 200;

/// A page of upstream results, or the upstream's refusal.
enum Page {
    Items(Vec<Value>),
    Refused(Response<RespBody>),
}

/// The answer: the count, or the client's window with the pagination headers (`more`: the
/// window is complete and more results exist).
fn search_answer(
    plan: &SearchPlan,
    kept: Vec<Value>,
    more: bool,
    want: u64,
) -> Result<Response<RespBody>, GatewayError> {
    if plan.count {
        return Ok(reply_response(Reply {
            status: StatusCode::OK,
            body: kept.len().to_string().into_bytes(),
            headers: Vec::new(),
        }));
    }
    let window: Vec<Value> = kept
        .into_iter()
        .skip(plan.offset as usize)
        .take(plan.limit as usize)
        .collect();
    let mut headers = Vec::new();
    let total = if more {
        headers.push((
            HeaderName::from_static("x-pagination-next"),
            HeaderValue::from(want),
        ));
        want + 1
    } else {
        plan.offset + window.len() as u64
    };
    headers.push((
        HeaderName::from_static("x-pagination-total"),
        HeaderValue::from(total),
    ));
    let body = serde_json::to_vec(&window).map_err(|e| GatewayError::internal(e.to_string()))?;
    Ok(reply_response(Reply {
        status: StatusCode::OK,
        body,
        headers,
    }))
}
