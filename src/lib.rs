#![doc = "graphguard: an authorization gateway for LangGraph agent servers."]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![warn(missing_docs)]

pub mod abac;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod bodybuf;
pub mod config;
pub mod conn_guard;
pub mod decide;
pub mod error;
pub mod event;
pub mod explain;
pub mod fields;
pub mod filter;
pub mod forward_auth;
pub mod idle;
pub mod ids;
pub mod jwks;
pub mod jwt;
pub mod limits;
pub mod logwriter;
pub mod metrics;
pub mod outgoing;
pub mod policy;
pub mod policytest;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod rewrite;
pub mod routes;
pub mod server;
pub mod store;
pub mod template;
pub mod token_cache;
pub mod upstream;
pub mod user;
pub mod webhook;
