//! Threads (semantics §5.1): create, prune, by-id operations, patch, state update, copy, commands; and the loopback surfaces (§5.7).

use super::*;
use crate::routes::UnmediatedGroup;

impl<'a> Cx<'a> {
    pub(super) fn thread_create(&mut self) -> Decided<Forward> {
        self.on(Subject::CreateBody);
        let g = self.grant(THREADS, Action::Create)?;
        self.on(Subject::None);
        let tid = self.str_field("thread_id")?;
        let supersteps = self
            .obj()?
            .get_raw("supersteps")
            .is_some_and(|r| r != b"null");
        if let Some(tid) = &tid {
            let do_nothing = self.str_field("if_exists")?.as_deref() == Some("do_nothing");
            if g.active_filter().is_some() || do_nothing {
                if let Some(v) = self.fact(Target::Thread(tid.clone()))? {
                    self.create_on_existing(THREADS, &g, tid, &v, do_nothing, supersteps)?;
                }
            }
        }
        if supersteps {
            self.grant(THREADS, Action::Update)?;
            self.grant(THREADS, Action::Read)?;
        }
        let mut f = self.stamped(&g, false)?;
        if let Some(tid) = tid {
            f.invalidate.push(Target::Thread(tid));
        }
        Ok(f)
    }

    /// A create that names an existing thread or assistant. LangGraph's create filter decides
    /// first (409 on a mismatch). With `if_exists: do_nothing` the server answers with the
    /// existing resource, so the caller must be able to read it (handler filter and access
    /// policies on its own tags), and with `supersteps` it writes the thread's state, so the
    /// caller must be able to update it: LangGraph checks neither; graphguard answers 409 as
    /// for a mismatch (docs/compatibility.md). With `raise` the server answers 409 itself.
    pub(super) fn create_on_existing(
        &mut self,
        res: Resource,
        g: &Grant,
        id: &str,
        existing: &Value,
        do_nothing: bool,
        supersteps: bool,
    ) -> Decided<()> {
        let (target, exists) = match res {
            THREADS => (
                Target::Thread(id.to_string()),
                format!("Thread with ID {id} already exists"),
            ),
            _ => (
                Target::Assistant(id.to_string()),
                format!("Assistant {id} already exists"),
            ),
        };
        let md = metadata_ref(existing);
        if g.active_filter().is_some_and(|f| !f.matches(md)) {
            return Err(GatewayError::conflict(exists).into());
        }
        if !do_nothing {
            return Ok(());
        }
        let mut actions = vec![Action::Read];
        if supersteps && res == THREADS {
            actions.push(Action::Update);
        }
        let saved = std::mem::replace(&mut self.subject, Subject::Target(target));
        let mut verdict = Ok(());
        for action in actions {
            match self.grant(res, action) {
                Ok(g) if g.active_filter().is_none_or(|f| f.matches(md)) => {}
                Ok(_) | Err(Stop::Refuse(_)) => {
                    verdict = Err(GatewayError::conflict(exists.clone()).into());
                    break;
                }
                Err(need) => {
                    verdict = Err(need);
                    break;
                }
            }
        }
        self.subject = saved;
        verdict
    }

    pub(super) fn thread_prune(&mut self) -> Decided<Forward> {
        let ids: Vec<String> = self
            .obj()?
            .get::<Vec<String>>("thread_ids")
            .map_err(|_| GatewayError::unprocessable("thread_ids must be a list of strings"))?
            .unwrap_or_default();
        if ids.is_empty() {
            return Ok(forward());
        }
        let g = self.grant(THREADS, Action::Delete)?;
        if self
            .policy
            .access
            .needs_tags(self.user, Event::new(THREADS, Action::Delete))
        {
            for id in &ids {
                self.on(Subject::Target(Target::Thread(id.clone())));
                self.check_access(Event::new(THREADS, Action::Delete))?;
            }
        }
        let none = || GatewayError::not_found("At least one thread not found or not authorized");
        if let Some(filter) = g.active_filter() {
            for id in &ids {
                match self.fact(Target::Thread(id.clone()))? {
                    Some(v) if filter.matches(metadata_ref(&v)) => {}
                    _ => return Err(none().into()),
                }
            }
        }
        Ok(Forward {
            invalidate: ids.into_iter().map(Target::Thread).collect(),
            ..forward()
        })
    }

    /// A v2 protocol command `{id, method, params}`. `run.start` starts a run and
    /// `input.respond` resumes one: their parameters are checked against the inventory like a
    /// run's body (the server sanitizes neither), `run.start`'s assistant is checked as on run
    /// creation, and the handler's metadata is stamped into its `params.metadata`.
    pub(super) fn command(&mut self, g: &Grant) -> Decided<Forward> {
        let shape = match self.str_field("method")?.as_deref() {
            Some("run.start") => &crate::routes::fields::RUN_START_PARAMS,
            Some("input.respond") => &crate::routes::fields::INPUT_RESPOND_PARAMS,
            _ => return Ok(forward()),
        };
        let params = match self.obj()?.get_raw("params") {
            None | Some(b"null") => ObjectBody::parse(b"{}", MAX_JSON_DEPTH),
            Some(raw) => ObjectBody::parse(raw, MAX_JSON_DEPTH),
        }
        .map_err(|e| match e {
            BodyError::NotAnObject => GatewayError::unprocessable("params must be an object"),
            other => body_error(other),
        })?;
        let fields = self.vet(&params, shape)?;
        let start = std::ptr::eq(shape, &crate::routes::fields::RUN_START_PARAMS);
        if start {
            if let Some(Value::String(aid)) =
                params.get::<Value>("assistant_id").map_err(body_error)?
            {
                let miss = GatewayError::not_found("Thread or assistant not found.");
                if self
                    .fact(Target::Assistant(assistant_ref(&aid)?))?
                    .is_none()
                {
                    return Err(miss.into());
                }
                self.assistant_read_check(&aid, miss)?;
            }
        }
        let mut edits: Vec<(&str, Option<&[u8]>)> = fields
            .iter()
            .map(|(k, v)| (*k, Some(v.as_slice())))
            .collect();
        let merged = match g.metadata.as_ref().filter(|m| start && !m.is_empty()) {
            Some(md) => Some(params.merge_metadata(pairs(md)).map_err(|e| match e {
                BodyError::NotAnObject => {
                    GatewayError::unprocessable("params.metadata must be an object")
                }
                other => body_error(other),
            })?),
            None => None,
        };
        if let Some(m) = &merged {
            edits.push(("metadata", Some(m)));
        }
        if edits.is_empty() {
            return Ok(forward());
        }
        let new_params = params.splice(&edits);
        Ok(Forward {
            body: Some(self.body_with(&[("params", Some(&new_params))])?),
            ..forward()
        })
    }

    /// A by-id thread operation whose filter gates existence (`miss`: what a mismatch looks
    /// like on this route).
    pub(super) fn thread_by_id(&mut self, miss: Miss) -> Decided<Forward> {
        let p = &self.input.route.params;
        let tid = self.param(&p.thread_id)?;
        self.on(Subject::Target(Target::Thread(tid.clone())));
        let action = self
            .input
            .route
            .route
            .events
            .first()
            .map(|e| e.action)
            .unwrap_or(Action::Read);
        let g = match self.grant(THREADS, action) {
            Err(Stop::Refuse(e)) if miss == Miss::ThreadNotFoundSse => {
                return Err(self.sse_headers(e.as_sse()).into())
            }
            other => other?,
        };
        self.check(&g, Target::Thread(tid.clone()), miss, &tid)
            .map_err(|s| match s {
                Stop::Refuse(e) if miss == Miss::ThreadNotFoundSse => {
                    Stop::Refuse(self.sse_headers(e))
                }
                other => other,
            })?;
        let mut f = forward();
        if action != Action::Read {
            f.invalidate.push(Target::Thread(tid));
        }
        Ok(f)
    }

    /// `PATCH /threads/{id}`: the handler runs only if the thread exists.
    pub(super) fn thread_patch(&mut self) -> Decided<Forward> {
        let p = &self.input.route.params;
        let tid = self.param(&p.thread_id)?;
        self.on(Subject::Target(Target::Thread(tid.clone())));
        // The handler runs only if the thread exists: a missing thread is 404 even
        // when the handler would deny.
        let g = match self.grant(THREADS, Action::Update) {
            Ok(g) => g,
            Err(Stop::Refuse(e)) => {
                return match self.fact(Target::Thread(tid.clone()))? {
                    None => Err(Miss::NotFound.error(&tid).into()),
                    Some(_) => Err(e.into()),
                }
            }
            Err(s) => return Err(s),
        };
        self.check(&g, Target::Thread(tid.clone()), Miss::NotFound, &tid)?;
        let mut f = self.stamped(&g, false)?;
        f.invalidate.push(Target::Thread(tid));
        Ok(f)
    }

    /// `POST /threads/{id}/state`: update, then read.
    pub(super) fn thread_state_update(&mut self) -> Decided<Forward> {
        let p = &self.input.route.params;
        let tid = self.param(&p.thread_id)?;
        self.on(Subject::Target(Target::Thread(tid.clone())));
        let upd = self.grant(THREADS, Action::Update)?;
        let read = self.grant(THREADS, Action::Read)?;
        self.check(&read, Target::Thread(tid.clone()), Miss::ThreadWithId, &tid)?;
        if upd.active_filter().is_some() {
            self.check(&upd, Target::Thread(tid.clone()), Miss::ThreadWithId, &tid)
                .map_err(|s| match s {
                    Stop::Refuse(_) => Stop::Refuse(GatewayError::forbidden("Forbidden")),
                    other => other,
                })?;
        }
        Ok(Forward {
            invalidate: vec![Target::Thread(tid)],
            ..forward()
        })
    }

    /// `POST /threads/{id}/copy`: read the source; create is only a veto.
    pub(super) fn thread_copy(&mut self) -> Decided<Forward> {
        let p = &self.input.route.params;
        let tid = self.param(&p.thread_id)?;
        self.on(Subject::Target(Target::Thread(tid.clone())));
        let read = self.grant(THREADS, Action::Read)?;
        self.check(&read, Target::Thread(tid.clone()), Miss::Conflict, &tid)?;
        // The create handler is only a veto: the copy keeps the source's metadata.
        self.grant(THREADS, Action::Create)?;
        Ok(forward())
    }

    /// `POST /threads/{id}/commands`: run creation through a command, on a readable thread.
    pub(super) fn thread_commands(&mut self) -> Decided<Forward> {
        let p = &self.input.route.params;
        let tid = self.param(&p.thread_id)?;
        self.on(Subject::Target(Target::Thread(tid.clone())));
        let g = self.grant(THREADS, Action::CreateRun)?;
        self.check(
            &g,
            Target::Thread(tid.clone()),
            Miss::ThreadOrAssistant,
            &tid,
        )?;
        let read = self.grant(THREADS, Action::Read)?;
        self.check(
            &read,
            Target::Thread(tid.clone()),
            Miss::ThreadOrAssistant,
            &tid,
        )?;
        let mut f = self.command(&g)?;
        f.invalidate.push(Target::Thread(tid));
        Ok(f)
    }

    /// A loopback surface: forwarded only if `settings.unmediated_routes` enables its group.
    pub(super) fn unmediated(&mut self, group: UnmediatedGroup) -> Decided<Outcome> {
        if !self.policy.unmediated.contains(&group) {
            return Ok(Outcome::Refuse(GatewayError::forbidden(format!(
                "This route's inner calls bypass authorization handlers; enable it with \
                 settings.unmediated_routes: [{}]",
                group.as_str()
            ))));
        }
        Ok(Outcome::Forward(forward()))
    }
}
