//! Connections that can be cut. tonic runs each connection on its own task, so a server that
//! stops waiting for stuck calls must close their sockets itself: this wrapper fails every read
//! and write once its token is cancelled.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

pin_project_lite::pin_project! {
    pub(crate) struct Abortable<IO> {
        #[pin]
        io: IO,
        abort: Pin<Box<WaitForCancellationFutureOwned>>,
    }
}

impl<IO> Abortable<IO> {
    pub(crate) fn new(io: IO, abort: CancellationToken) -> Self {
        Self {
            io,
            abort: Box::pin(abort.cancelled_owned()),
        }
    }
}

/// Polls the abort signal, registering the waker so a blocked read wakes up when it fires.
fn aborted(abort: &mut Pin<Box<WaitForCancellationFutureOwned>>, cx: &mut Context<'_>) -> bool {
    abort.as_mut().poll(cx).is_ready()
}

fn abort_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "shutdown grace period over",
    )
}

impl<IO: AsyncRead> AsyncRead for Abortable<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if aborted(this.abort, cx) {
            return Poll::Ready(Err(abort_error()));
        }
        this.io.poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite> AsyncWrite for Abortable<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        if aborted(this.abort, cx) {
            return Poll::Ready(Err(abort_error()));
        }
        this.io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if aborted(this.abort, cx) {
            return Poll::Ready(Err(abort_error()));
        }
        this.io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Abortable<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
