//! Loading someone else's system by mistake is a denial of service: every target must resolve to
//! this machine's loopback addresses unless `--allow-remote` says otherwise.

use std::net::IpAddr;

use super::{LoadError, args::Target};

/// `Ok` when every address of every host of `target` is a loopback address.
pub(crate) async fn ensure_loopback(target: &Target) -> Result<(), LoadError> {
    let hosts: Vec<(String, u16)> = match target {
        Target::Rest { url, .. } => {
            let host = url.host().unwrap_or_default();
            vec![(host.to_owned(), url.port_u16().unwrap_or(80))]
        }
        Target::Grpc(a) => [&a.user, &a.product, &a.order]
            .into_iter()
            .map(|address| split(address))
            .collect::<Result<_, _>>()?,
    };
    for (host, port) in hosts {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<IpAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| LoadError::Argument(format!("cannot resolve {bare}: {e}")))?
                .map(|socket| socket.ip())
                .collect(),
        };
        if let Some(remote) = addresses.iter().find(|ip| !ip.is_loopback()) {
            return Err(LoadError::Remote {
                target: format!("{host}:{port}"),
                address: *remote,
            });
        }
        if addresses.is_empty() {
            return Err(LoadError::Argument(format!("{bare} resolves to nothing")));
        }
    }
    Ok(())
}

fn split(address: &str) -> Result<(String, u16), LoadError> {
    let bad = || LoadError::Argument(format!("{address:?} is not host:port"));
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::load::grpc::Addresses;

    fn rest(url: &str) -> Target {
        Target::Rest {
            url: url.parse().unwrap_or_default(),
            headers: HeaderMap::new(),
        }
    }

    #[tokio::test]
    async fn only_loopback_targets_are_loaded_without_allow_remote() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:8080/v1",
            "http://[::1]:8080",
        ] {
            assert!(ensure_loopback(&rest(ok)).await.is_ok(), "{ok}");
        }
        let refused = ensure_loopback(&rest("http://192.0.2.7:8080")).await;
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("--allow-remote"), "{message}");
        assert!(message.contains("192.0.2.7"), "{message}");

        let grpc = |order: &str| {
            Target::Grpc(Addresses {
                user: "127.0.0.1:50051".into(),
                product: "localhost:50052".into(),
                order: order.into(),
            })
        };
        assert!(ensure_loopback(&grpc("127.0.0.1:50053")).await.is_ok());
        let refused = ensure_loopback(&grpc("10.1.2.3:50053")).await;
        assert!(
            matches!(refused, Err(LoadError::Remote { .. })),
            "{refused:?}"
        );
        assert!(ensure_loopback(&grpc("no-port")).await.is_err());
    }
}
