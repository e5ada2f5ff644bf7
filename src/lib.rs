//! isoswitch: an ISO 8583 card-authorization switch. `iso8583` is the codec (no
//! tokio); `frame` wraps messages on a stream; `config` assembles the config
//! sections (`config_values` holds what they share, `channel` the traffic kinds
//! every layer names) and `route` says where authorizations go; `risk` declines what is plainly wrong before routing;
//! `switch` is the hot path, `server` the terminal listeners,
//! `upstream` the issuer links and `simulator` the issuer simulator;
//! `journal` stores transactions and the store-and-forward queue durably;
//! `settle` turns a day of the journal into the merchants' settlement report;
//! `runtime` builds the async runtime they run on.

pub mod channel;
pub mod config;
pub mod config_values;
pub mod frame;
pub mod iso8583;
pub mod journal;
pub mod log_limit;
pub mod metrics_http;
pub mod risk;
pub mod route;
pub mod runtime;
pub mod server;
pub mod settle;
pub mod simulator;
pub mod specs;
pub mod switch;
pub mod tls;
pub mod upstream;
pub mod vt;
pub mod vt_config;
