//! Resolving the approver Service name to every replica address.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use crate::config::ApproverAddress;

/// A future resolving to a set of addresses.
pub type Resolution = Pin<Box<dyn Future<Output = io::Result<BTreeSet<SocketAddr>>> + Send>>;

/// Turns the approver address into the replica endpoints to keep streams to.
pub trait Resolve: fmt::Debug + Send + Sync + 'static {
    /// Every address `address` stands for now.
    fn resolve(&self, address: &ApproverAddress) -> Resolution;
}

/// The system resolver (`getaddrinfo`, which follows `/etc/resolv.conf` and the cluster
/// DNS); a headless Service name yields one address per ready replica.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, address: &ApproverAddress) -> Resolution {
        let host = address.host.clone();
        let port = address.port;
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), port)).await?;
            Ok(addrs
                .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ip_literals_and_localhost_resolve() {
        let literal = SystemResolver
            .resolve(&"127.0.0.1:8443".parse().expect("address"))
            .await
            .expect("resolves");
        assert_eq!(
            literal.into_iter().collect::<Vec<_>>(),
            ["127.0.0.1:8443".parse::<SocketAddr>().expect("addr")]
        );
        let localhost = SystemResolver
            .resolve(&"localhost:1".parse().expect("address"))
            .await
            .expect("resolves");
        assert!(
            localhost
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 1)
        );
    }
}
