//! Operating the gateway: the admin listener, policy reload, metrics, the audit log and its
//! writer, decision explanations and policy tests.

pub mod admin;
pub mod audit;
pub mod explain;
pub mod logwriter;
pub mod manage;
pub mod metrics;
pub mod reload;
