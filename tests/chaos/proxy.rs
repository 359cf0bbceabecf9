//! A TCP fault proxy between a service and its database or broker: it passes bytes through, adds
//! latency to each chunk, or cuts the line (open connections closed, new ones refused) until told
//! otherwise. What a network partition or a slow link looks like from inside the service.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    Up,
    Slow(Duration),
    Cut,
}

pub(crate) struct FaultProxy {
    pub(crate) addr: SocketAddr,
    line: watch::Sender<Line>,
    _tasks: JoinSet<()>,
}

impl FaultProxy {
    /// Listens on a loopback port of its own and forwards to `target`.
    pub(crate) async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (line, watching) = watch::channel(Line::Up);
        let mut tasks = JoinSet::new();
        tasks.spawn(accept(listener, target, watching));
        Ok(Self {
            addr,
            line,
            _tasks: tasks,
        })
    }

    pub(crate) fn set(&self, line: Line) {
        self.line.send_replace(line);
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, line: watch::Receiver<Line>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *line.borrow() == Line::Cut {
            drop(client);
            continue;
        }
        let line = line.clone();
        connections.spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            // Either direction ending (or a cut) ends both: the peer sees the connection drop.
            tokio::select! {
                () = pipe(client_read, server_write, line.clone()) => {}
                () = pipe(server_read, client_write, line) => {}
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut line: watch::Receiver<Line>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = line.wait_for(|l| *l == Line::Cut) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let current = *line.borrow();
        match current {
            Line::Cut => return,
            Line::Slow(delay) => tokio::time::sleep(delay).await,
            Line::Up => {}
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
