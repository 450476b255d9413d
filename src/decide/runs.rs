//! Runs (semantics §5.2, §5.3): creation on a thread or stateless, batches, listing, cancelling.

use super::*;

impl<'a> Cx<'a> {
    pub(super) fn run_create(&mut self, on_thread: bool) -> Decided<Forward> {
        let miss = GatewayError::not_found("Thread or assistant not found.");
        let aid = self.str_field("assistant_id")?;
        // An unknown assistant is 404 before any handler runs (semantics §5.2 step 2).
        if let Some(aid) = &aid {
            if self.fact(Target::Assistant(assistant_ref(aid)?))?.is_none() {
                return Err(miss.into());
            }
        }
        let subject = self.run_subject(on_thread)?;
        self.on(subject);
        let g = self.grant(THREADS, Action::CreateRun)?;
        if let Some(aid) = aid {
            self.assistant_read_check(&aid, miss.clone())?;
        }
        let mut f = self.stamped(&g, false)?;
        if on_thread {
            let tid = self.param(&self.input.route.params.thread_id)?;
            if let Some(filter) = g.active_filter() {
                self.run_thread_passes(filter, &tid, miss.clone())?;
            }
            if self.answers_with_state() {
                self.run_reads_its_thread(&tid, miss)?;
            }
            f.invalidate.push(Target::Thread(tid));
        }
        Ok(f)
    }

    /// Whether the route answers with the run's output, the thread's state: `/wait` and
    /// `/stream` (LangGraph joins the run with a `threads:read` check, semantics §5.2 step 9).
    fn answers_with_state(&self) -> bool {
        let t = self.input.route.route.template;
        t.ends_with("/runs/wait") || t.ends_with("/runs/stream")
    }

    /// A run on an existing thread that answers with its state needs the read check too (the
    /// handler's read filter and access policies on the thread's tags): permission to start
    /// runs on a thread is not permission to read it. A thread the run creates is the
    /// caller's own.
    fn run_reads_its_thread(&mut self, tid: &str, miss: GatewayError) -> Decided<()> {
        let Some(thread) = self.fact(Target::Thread(tid.to_string()))? else {
            return Ok(());
        };
        let saved = std::mem::replace(
            &mut self.subject,
            Subject::Target(Target::Thread(tid.to_string())),
        );
        let read = self.grant(THREADS, Action::Read);
        self.subject = saved;
        match read?.active_filter() {
            Some(f) if !f.matches(metadata_ref(&thread)) => Err(miss.into()),
            _ => Ok(()),
        }
    }

    /// What access policies read a run's tags from: its thread's, or (for a thread the run
    /// will create) the run's stamped metadata.
    fn run_subject(&self, on_thread: bool) -> Decided<Subject> {
        if !on_thread {
            return Ok(Subject::CreateBody);
        }
        let tid = self.param(&self.input.route.params.thread_id)?;
        let t = Target::Thread(tid);
        let needs_tags = self
            .policy
            .access
            .needs_tags(self.user, Event::new(THREADS, Action::CreateRun));
        if needs_tags && self.fact(t.clone())?.is_none() {
            Ok(Subject::CreateBody)
        } else {
            Ok(Subject::Target(t))
        }
    }

    /// The run's thread must pass the handler's filter, or not exist yet and be created by
    /// the run (`if_not_exists: create`).
    fn run_thread_passes(
        &self,
        filter: &ResolvedFilter,
        tid: &str,
        miss: GatewayError,
    ) -> Decided<()> {
        match self.fact(Target::Thread(tid.to_string()))? {
            Some(v) if filter.matches(metadata_ref(&v)) => Ok(()),
            Some(_) => Err(miss.into()),
            None if self.str_field("if_not_exists")?.as_deref() == Some("create") => Ok(()),
            None => Err(miss.into()),
        }
    }

    pub(super) fn run_batch(&mut self) -> Decided<Forward> {
        let Body::Array(items) = self.input.body else {
            return Err(GatewayError::internal("route body kind mismatch").into());
        };
        let miss = GatewayError::not_found("Thread or assistant not found.");
        let item_edits = std::mem::take(&mut self.item_edits);
        let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let fields = item_edits.get(i).map_or(&[][..], Vec::as_slice);
            let aid = match item.get::<Value>("assistant_id").map_err(body_error)? {
                Some(Value::String(aid)) => Some(aid),
                None | Some(Value::Null) => None,
                Some(_) => {
                    return Err(GatewayError::unprocessable("assistant_id must be a string").into())
                }
            };
            if let Some(aid) = &aid {
                if self.fact(Target::Assistant(assistant_ref(aid)?))?.is_none() {
                    return Err(miss.clone().into());
                }
            }
            // Each item runs on a thread it creates from its own metadata (semantics §5.3).
            let g = self.grant_create_from(Event::new(THREADS, Action::CreateRun), Some(item))?;
            if let Some(aid) = &aid {
                self.assistant_read_check(aid, miss.clone())?;
            }
            let mut edits: Vec<(&str, Option<&[u8]>)> = fields
                .iter()
                .map(|(k, v)| (*k, Some(v.as_slice())))
                .collect();
            let merged = match g.metadata.as_ref().filter(|m| !m.is_empty()) {
                Some(md) => Some(item.merge_metadata(pairs(md)).map_err(|e| match e {
                    BodyError::NotAnObject => {
                        GatewayError::unprocessable("metadata must be an object")
                    }
                    other => body_error(other),
                })?),
                None => None,
            };
            if let Some(m) = &merged {
                edits.push(("metadata", Some(m)));
            }
            out.push((!edits.is_empty()).then(|| item.splice(&edits)));
        }
        let mut f = forward();
        if out.iter().any(Option::is_some) {
            let mut body = b"[".to_vec();
            for (i, (item, stamped)) in items.iter().zip(&out).enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                match stamped {
                    Some(b) => body.extend_from_slice(b),
                    None => body.extend_from_slice(&item.splice(&[])),
                }
            }
            body.push(b']');
            f.body = Some(body.into());
        }
        Ok(f)
    }

    /// `POST /runs/cancel`: by thread and runs, or by status. Cancelling by status reaches
    /// every thread on the server, so it is refused whenever the caller's access depends on
    /// the thread (a handler filter, or access policies that read its tags).
    pub(super) fn runs_cancel(&mut self) -> Decided<Forward> {
        let tid = self.str_field("thread_id")?;
        if let Some(tid) = &tid {
            self.on(Subject::Target(Target::Thread(tid.clone())));
        }
        let g = self.grant(THREADS, Action::Update)?;
        let per_thread = g.active_filter().is_some()
            || self
                .policy
                .access
                .needs_tags(self.user, Event::new(THREADS, Action::Update));
        match tid {
            Some(tid) => {
                self.check(&g, Target::Thread(tid.clone()), Miss::NoRunsToCancel, &tid)?;
                Ok(Forward {
                    invalidate: vec![Target::Thread(tid)],
                    ..forward()
                })
            }
            None if per_thread => Err(GatewayError::forbidden(
                "Cancelling runs by status cannot be authorized thread by thread behind \
                 graphguard; cancel with thread_id and run_ids",
            )
            .into()),
            None => Ok(forward()),
        }
    }

    /// `GET /threads/{id}/runs`: read and search on the thread.
    pub(super) fn run_list(&mut self) -> Decided<Forward> {
        let p = &self.input.route.params;
        let tid = self.param(&p.thread_id)?;
        self.on(Subject::Target(Target::Thread(tid.clone())));
        let read = self.grant(THREADS, Action::Read)?;
        self.check(&read, Target::Thread(tid.clone()), Miss::ThreadWithId, &tid)?;
        let search = self.grant(THREADS, Action::Search)?;
        self.check(
            &search,
            Target::Thread(tid.clone()),
            Miss::ThreadWithId,
            &tid,
        )?;
        Ok(forward())
    }

    /// Check the assistant a run or cron uses, named as the client wrote it (a canonical UUID
    /// or a graph name, see [`assistant_ref`]): it must exist (the server answers `miss`
    /// before any handler runs, semantics §5.2 step 2), and unless it is a graph's system assistant,
    /// the caller must be able to read it (step 4). A system assistant is recognised by its id
    /// (`uuid5(namespace, graph_id)` of its own graph), never by a `created_by: system`
    /// metadata value, which any creator could write.
    pub(super) fn assistant_read_check(&mut self, named: &str, miss: GatewayError) -> Decided<()> {
        let aid = assistant_ref(named)?;
        let aid = aid.as_str();
        let Some(v) = self.fact(Target::Assistant(aid.to_string()))? else {
            return Err(miss.into());
        };
        let md = metadata_ref(&v);
        let is_system = v
            .get("graph_id")
            .and_then(Value::as_str)
            .is_some_and(|g| system_assistant_id(g).to_string() == aid);
        if is_system {
            return Ok(());
        }
        let saved = std::mem::replace(
            &mut self.subject,
            Subject::Target(Target::Assistant(aid.to_string())),
        );
        let g = self.grant(ASSISTANTS, Action::Read);
        self.subject = saved;
        let g = g?;
        if g.active_filter().is_some_and(|f| !f.matches(md)) {
            return Err(miss.into());
        }
        Ok(())
    }
}
