//! The decision's core: the grant of a handler for an event (roles and access policies first), the facts it reads, and the checks of a filter against a looked-up resource.

use super::*;

impl<'a> Cx<'a> {
    /// Roles and access policies for an event on the current subject (the tables of docs/access-control.md),
    /// before the handler runs on what they allow.
    pub(super) fn check_access(&mut self, event: Event) -> Decided<()> {
        let ac = &self.policy.access;
        if !ac.is_enabled() {
            return Ok(());
        }
        let needs_tags = ac.needs_tags(self.user, event);
        let tags = match (&self.subject, needs_tags) {
            (Subject::Deferred, _) => return Ok(()),
            (_, false) | (Subject::None, _) | (Subject::CreateBody, _) => Map::new(),
            (Subject::PerItem, true) => {
                if !self.per_item.contains(&event) {
                    self.per_item.push(event);
                }
                return Ok(());
            }
            (Subject::Tags(t), true) => t.clone(),
            (Subject::Target(t), true) => {
                let t = t.clone();
                match self.fact(t.clone())? {
                    Some(v) => t.tags(&v),
                    None => Map::new(),
                }
            }
        };
        let d = ac.decide(self.user, event, &tags);
        let allowed = d.allowed;
        let reason = d.reason;
        self.access.push(d);
        if !allowed {
            return Err(GatewayError::forbidden(match reason {
                crate::policy::access::Reason::DenyWins => {
                    format!("Forbidden: {event} is denied by an access policy")
                }
                _ => format!("Forbidden: no role or access policy grants {event}"),
            })
            .into());
        }
        Ok(())
    }

    /// A create: the handler stamps first, then access policies read the stamped metadata.
    pub(super) fn grant_create(&mut self, event: Event) -> Decided<Grant> {
        let o = match self.input.body {
            Body::Object(o) => Some(o),
            _ => None,
        };
        self.grant_create_from(event, o)
    }

    /// [`Cx::grant_create`] for a created resource described by `o` (the body, or one item of
    /// a batch): access policies read its `metadata` after the handler's stamping.
    pub(super) fn grant_create_from(
        &mut self,
        event: Event,
        o: Option<&ObjectBody<'_>>,
    ) -> Decided<Grant> {
        let r = self.policy.evaluate(event, self.user);
        self.record(event, &r);
        let g = r?;
        if self.policy.access.is_enabled() {
            let mut tags = match o.map(|o| o.get::<Value>("metadata")).transpose() {
                Ok(Some(Some(Value::Object(m)))) => m,
                Ok(_) => Map::new(),
                Err(e) => return Err(body_error(e).into()),
            };
            if let Some(md) = &g.metadata {
                for (k, v) in md {
                    tags.insert(k.clone(), v.clone());
                }
            }
            let saved = std::mem::replace(&mut self.subject, Subject::Tags(tags));
            let checked = self.check_access(event);
            self.subject = saved;
            if let Err(e) = checked {
                if let Some(last) = self.steps.last_mut() {
                    last.allowed = false;
                }
                return Err(e);
            }
        }
        Ok(g)
    }

    /// Record a handler call.
    pub(super) fn record(&mut self, event: Event, r: &Result<Grant, GatewayError>) {
        let step = match r {
            Ok(g) => Step {
                event,
                handler: g.handler.clone(),
                rule: g.rule,
                allowed: true,
                filter: g.filter.clone().filter(|f| !f.is_empty()),
                stamped: g.stamped.clone(),
            },
            Err(_) => Step {
                event,
                handler: self.policy.handler_for(event).map(|h| h.shared_key.clone()),
                rule: None,
                allowed: false,
                filter: None,
                stamped: Arc::default(),
            },
        };
        self.steps.push(step);
    }

    /// Set where access policies read tags from.
    pub(super) fn on(&mut self, s: Subject) {
        self.subject = s;
    }

    /// Run the access check and then the handler for an event; a refusal stops the decision.
    pub(super) fn grant(&mut self, resource: Resource, action: Action) -> Decided<Grant> {
        let event = Event::new(resource, action);
        if matches!(self.subject, Subject::CreateBody) {
            return self.grant_create(event);
        }
        if let Err(e) = self.check_access(event) {
            if let Stop::Refuse(_) = &e {
                self.steps.push(Step {
                    event,
                    handler: None,
                    rule: None,
                    allowed: false,
                    filter: None,
                    stamped: Arc::default(),
                });
            }
            return Err(e);
        }
        let r = self.policy.evaluate(event, self.user);
        self.record(event, &r);
        Ok(r?)
    }

    /// A looked-up fact, or stop and ask for it.
    pub(super) fn fact(&self, t: Target) -> Decided<Option<Arc<Value>>> {
        if let Some(f) = self.facts.get(&t) {
            return Ok(f.clone());
        }
        let mut peeked = self.peeked.borrow_mut();
        if let Some((_, f)) = peeked.iter().find(|(k, _)| *k == t) {
            return Ok(f.clone());
        }
        match (self.cached)(&t) {
            Some(f) => {
                peeked.push((t, f.clone()));
                Ok(f)
            }
            None => Err(Stop::Need(t)),
        }
    }

    /// LangGraph's by-id check: with an active filter the resource must exist and pass.
    pub(super) fn check(&self, g: &Grant, t: Target, miss: Miss, id: &str) -> Decided<()> {
        if let Some(f) = g.active_filter() {
            match self.fact(t)? {
                Some(v) if f.matches(metadata_ref(&v)) => {}
                _ => return Err(miss.error(id).into()),
            }
        }
        Ok(())
    }

    pub(super) fn obj(&self) -> Decided<&'a ObjectBody<'a>> {
        match self.input.body {
            Body::Object(o) => Ok(o),
            _ => Err(GatewayError::internal("route body kind mismatch").into()),
        }
    }

    pub(super) fn str_field(&self, key: &str) -> Decided<Option<String>> {
        match self.obj()?.get::<Value>(key).map_err(body_error)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(GatewayError::unprocessable(format!("{key} must be a string")).into()),
        }
    }

    pub(super) fn param(&self, v: &Option<String>) -> Decided<String> {
        v.clone()
            .ok_or_else(|| GatewayError::internal("missing path parameter").into())
    }

    /// Stamp the grant's metadata into the body's `metadata` (overwriting client values).
    /// `search`: the body's metadata is a containment filter; stamping narrows it, exactly as
    /// LangGraph's in-place mutation does.
    pub(super) fn stamped(&self, g: &Grant, _search: bool) -> Decided<Forward> {
        let mut f = forward();
        if let Some(md) = g.metadata.as_ref().filter(|m| !m.is_empty()) {
            let o = self.obj()?;
            let merged = o.merge_metadata(pairs(md)).map_err(|e| match e {
                BodyError::NotAnObject => GatewayError::unprocessable("metadata must be an object"),
                other => body_error(other),
            })?;
            f.body = Some(self.body_with(&[("metadata", Some(&merged))])?);
        }
        Ok(f)
    }

    /// The headers the server sends on a run's join stream, kept on a refusal delivered as an
    /// SSE error event (the SDK reconnects to `Location`).
    pub(super) fn sse_headers(&self, e: GatewayError) -> GatewayError {
        let p = &self.input.route.params;
        match (&p.thread_id, &p.run_id) {
            (Some(t), Some(r)) => {
                let loc = HeaderValue::from_str(&format!("/threads/{t}/runs/{r}/stream"));
                let cloc = HeaderValue::from_str(&format!("/threads/{t}/runs/{r}"));
                match (loc, cloc) {
                    (Ok(l), Ok(c)) => e
                        .with_header(http::header::LOCATION, l)
                        .with_header(http::header::CONTENT_LOCATION, c),
                    _ => e,
                }
            }
            _ => e,
        }
    }
}
