//! Assistants (semantics §5.4): create, by-id operations, versions, delete.

use super::*;

impl<'a> Cx<'a> {
    pub(super) fn assistant_create(&mut self) -> Decided<Forward> {
        self.on(Subject::CreateBody);
        let g = self.grant(ASSISTANTS, Action::Create)?;
        self.on(Subject::None);
        let aid = self.str_field("assistant_id")?;
        if let Some(aid) = &aid {
            let do_nothing = self.str_field("if_exists")?.as_deref() == Some("do_nothing");
            if g.active_filter().is_some() || do_nothing {
                if let Some(v) = self.fact(Target::Assistant(aid.clone()))? {
                    self.create_on_existing(ASSISTANTS, &g, aid, &v, do_nothing, false)?;
                }
            }
        }
        let mut f = self.stamped(&g, false)?;
        // As for threads: a cached "missing" for a client-chosen id is stale once created.
        if let Some(aid) = aid {
            f.invalidate.push(Target::Assistant(aid));
        }
        Ok(f)
    }

    /// A by-id assistant operation: the handler's filter gates existence (`miss`: what a
    /// mismatch looks like); `stamp`: the grant's metadata is stamped into the body.
    pub(super) fn assistant_by_id(&mut self, miss: Miss, stamp: bool) -> Decided<Forward> {
        let p = &self.input.route.params;
        // `/graph` also takes a graph name: it means the graph's system assistant
        // (`validate_params` refused every other spelling that is not canonical).
        let aid = assistant_ref(&self.param(&p.assistant_id)?)?;
        self.on(Subject::Target(Target::Assistant(aid.clone())));
        let action = self
            .input
            .route
            .route
            .events
            .first()
            .map(|e| e.action)
            .unwrap_or(Action::Read);
        let g = self.grant(ASSISTANTS, action)?;
        self.check(&g, Target::Assistant(aid.clone()), miss, &aid)?;
        let mut f = if stamp {
            self.stamped(&g, false)?
        } else {
            forward()
        };
        if action != Action::Read {
            f.invalidate.push(Target::Assistant(aid));
        }
        Ok(f)
    }

    /// `POST /assistants/{id}/versions`: the read filter applies to each listed version.
    pub(super) fn assistant_versions(&mut self) -> Decided<Forward> {
        let p = &self.input.route.params;
        let aid = self.param(&p.assistant_id)?;
        self.on(Subject::Target(Target::Assistant(aid.clone())));
        let g = self.grant(ASSISTANTS, Action::Read)?;
        let mut f = forward();
        if let Some(filter) = g.active_filter() {
            if self.fact(Target::Assistant(aid.clone()))?.is_none() {
                return Err(Miss::Assistant.error(&aid).into());
            }
            f.response = ResponsePlan::FilterList {
                filter: filter.clone(),
                empty: Some(Miss::Assistant.error(&aid)),
            };
        }
        Ok(f)
    }

    /// `DELETE /assistants/{id}`; `delete_threads` only when thread deletes depend on nothing.
    pub(super) fn assistant_delete(&mut self) -> Decided<Forward> {
        let p = &self.input.route.params;
        let aid = self.param(&p.assistant_id)?;
        self.on(Subject::Target(Target::Assistant(aid.clone())));
        let g = self.grant(ASSISTANTS, Action::Delete)?;
        self.check(
            &g,
            Target::Assistant(aid.clone()),
            Miss::AssistantWithId,
            &aid,
        )?;
        if query_flag(self.input.query, "delete_threads") {
            // The server deletes every thread that ran with this assistant, whoever
            // owns it: only a caller whose thread deletes depend on nothing may.
            let td = self.grant(THREADS, Action::Delete)?;
            let per_thread = td.active_filter().is_some()
                || self
                    .policy
                    .access
                    .needs_tags(self.user, Event::new(THREADS, Action::Delete));
            if per_thread {
                return Err(GatewayError::forbidden(
                    "delete_threads cannot be authorized thread by thread behind graphguard; \
                     delete the threads first",
                )
                .into());
            }
        }
        Ok(Forward {
            invalidate: vec![Target::Assistant(aid)],
            ..forward()
        })
    }
}
