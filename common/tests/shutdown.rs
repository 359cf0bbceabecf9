//! Graceful shutdown of the server kit over real gRPC: SIGTERM flips health to NOT_SERVING, an
//! in-flight call still completes, and the grace period bounds how long a stuck call is awaited.
//! Its own test binary, because it sends SIGTERM to this process.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use shop_common::{config::ShutdownArgs, grpc::GrpcServer, shutdown::cancel_on_signal};
use shop_proto::payment::v1::{
    GetPaymentRequest, GetPaymentResponse, ListPaymentsRequest, ListPaymentsResponse, Payment,
    RefundPaymentRequest, RefundPaymentResponse,
    payment_service_client::PaymentServiceClient,
    payment_service_server::{PaymentService, PaymentServiceServer},
};
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A payment service whose GetPayment waits until the test releases it.
#[derive(Clone, Default)]
struct SlowPayments(Arc<Gate>);

#[derive(Default)]
struct Gate {
    entered: Notify,
    release: Notify,
}

#[tonic::async_trait]
impl PaymentService for SlowPayments {
    async fn get_payment(
        &self,
        request: Request<GetPaymentRequest>,
    ) -> Result<Response<GetPaymentResponse>, Status> {
        self.0.entered.notify_one();
        self.0.release.notified().await;
        Ok(Response::new(GetPaymentResponse {
            payment: Some(Payment {
                payment_id: request.into_inner().payment_id,
                ..Payment::default()
            }),
        }))
    }

    async fn list_payments(
        &self,
        _: Request<ListPaymentsRequest>,
    ) -> Result<Response<ListPaymentsResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }

    async fn refund_payment(
        &self,
        _: Request<RefundPaymentRequest>,
    ) -> Result<Response<RefundPaymentResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }
}

struct Running {
    gate: Arc<Gate>,
    channel: Channel,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), shop_common::grpc::ServeError>>,
}

async fn start(timing: ShutdownArgs) -> anyhow::Result<Running> {
    let service = SlowPayments::default();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = GrpcServer::new("slow-payments", shop_proto::FILE_DESCRIPTOR_SET, timing)
        .add_service(PaymentServiceServer::new(service.clone()))
        .serve(listener, shutdown.clone());
    let server = tokio::spawn(server);
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(Running {
        gate: service.0,
        channel,
        shutdown,
        server,
    })
}

async fn health(channel: &Channel) -> anyhow::Result<ServingStatus> {
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "shop.payment.v1.PaymentService".to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

async fn wait_for(channel: &Channel, want: ServingStatus) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(5), async {
        while health(channel).await? != want {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("health never became {want:?}"))?
}

#[tokio::test]
async fn sigterm_reports_not_serving_and_lets_the_in_flight_call_finish() -> anyhow::Result<()> {
    let running = start(ShutdownArgs {
        shutdown_grace_period: Duration::from_secs(10),
        shutdown_drain_delay: Duration::from_millis(500),
    })
    .await?;
    let signals = cancel_on_signal(running.shutdown.clone());
    wait_for(&running.channel, ServingStatus::Serving).await?;

    let mut client = PaymentServiceClient::new(running.channel.clone());
    let in_flight = tokio::spawn(async move {
        client
            .get_payment(GetPaymentRequest {
                payment_id: "pay-1".to_owned(),
            })
            .await
    });
    running.gate.entered.notified().await;

    let pid = std::process::id().to_string();
    let kill = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await?;
    assert!(kill.success());
    wait_for(&running.channel, ServingStatus::NotServing).await?;

    // Let the drain delay pass so the server is closing connections, then finish the call.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !running.server.is_finished(),
        "the server waits for the in-flight call"
    );
    running.gate.release.notify_one();
    let answer = in_flight.await??.into_inner();
    assert_eq!(
        answer.payment.map(|p| p.payment_id).as_deref(),
        Some("pay-1")
    );

    tokio::time::timeout(Duration::from_secs(5), running.server)
        .await
        .context("server did not stop after the last call")???;
    signals.await?;
    Ok(())
}

#[tokio::test]
async fn a_call_stuck_past_the_grace_period_is_abandoned() -> anyhow::Result<()> {
    let running = start(ShutdownArgs {
        shutdown_grace_period: Duration::from_millis(300),
        shutdown_drain_delay: Duration::ZERO,
    })
    .await?;
    wait_for(&running.channel, ServingStatus::Serving).await?;
    let mut client = PaymentServiceClient::new(running.channel.clone());
    let stuck = tokio::spawn(async move {
        client
            .get_payment(GetPaymentRequest {
                payment_id: "pay-2".to_owned(),
            })
            .await
    });
    running.gate.entered.notified().await;

    running.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running.server)
        .await
        .context("the grace period did not bound shutdown")???;
    let outcome = tokio::time::timeout(Duration::from_secs(5), stuck).await??;
    assert!(outcome.is_err(), "the abandoned call fails: {outcome:?}");
    Ok(())
}
