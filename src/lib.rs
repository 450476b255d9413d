#![doc = "graphguard: an authorization gateway for LangGraph agent servers."]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![warn(missing_docs)]

pub mod authn;
pub mod body;
pub mod cli;
pub mod clock;
pub mod decide;
pub mod error;
pub mod event;
pub mod gateway;
pub mod ids;
pub mod ops;
pub mod policy;
pub mod routes;
pub mod user;
