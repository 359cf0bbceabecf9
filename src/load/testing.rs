//! A real HTTP server on loopback for the load generator's own tests: it answers `200 ok` at
//! once, except request number `stall_at` (counting from 1), which it holds for `stall`.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinSet};

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) served: Arc<AtomicU64>,
    // Dropping it stops the server and every connection (they live in its JoinSet).
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TestServer {
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

pub(crate) async fn serve(stall_at: Option<u64>, stall: Duration) -> std::io::Result<TestServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let accepting = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            let answer = service_fn(move |_: Request<Incoming>| {
                let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if Some(number) == stall_at {
                        tokio::time::sleep(stall).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            connections.spawn(async move {
                // A client hanging up mid-answer is no concern of these tests.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), answer)
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    });
    Ok(TestServer {
        addr,
        served,
        accepting,
    })
}
