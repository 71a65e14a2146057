//! Raw attestation clients: any client certificate (or none), any report or proof receipt,
//! even bytes that are not protobuf, so tests can play a misbehaving or impersonating
//! agent; and [`probe`], a probe frame as the approver writes it, to any proof listener. An
//! agent that behaves runs the agent's own session ([`crate::agent`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use prost::Message as _;
use rubber_stamp_proto::v1::attestation_client::AttestationClient;
use rubber_stamp_proto::v1::{
    Ack, AgentMessage, ApproverMessage, FactSource, IpPrefix, NetworkInterface, NodeReport,
    ProofReceipt, agent_message, approver_message,
};
use rubber_stamp_proto::{proof, sources};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status, Streaming};

use crate::channel::{ChannelPki, SERVER_NAME};
use crate::pki::Leaf;

/// Why a raw client failed.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// The connection or its TLS settings failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    /// The stream's request side is closed.
    #[error("the request stream is closed")]
    Closed,
}

/// Path of the Attest method.
pub const ATTEST_PATH: &str = "/rubberstamp.v1.Attestation/Attest";

/// An open Attest stream.
#[derive(Debug)]
pub struct RawStream {
    /// Messages to the approver.
    pub tx: mpsc::Sender<AgentMessage>,
    /// Messages from the approver.
    pub rx: Streaming<ApproverMessage>,
}

/// A TLS connection to the approver at `addr` presenting `identity` (or no certificate),
/// trusting the channel's serving CA.
pub async fn connect(
    pki: &ChannelPki,
    addr: SocketAddr,
    identity: Option<&Leaf>,
) -> Result<Channel, RawError> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.serving.cert_pem()))
        .domain_name(SERVER_NAME);
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
    }
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// Opens an Attest stream on `channel`.
pub async fn open(channel: Channel) -> Result<RawStream, Status> {
    let (tx, rx) = mpsc::channel(16);
    let response = AttestationClient::new(channel)
        .attest(ReceiverStream::new(rx))
        .await?;
    Ok(RawStream {
        tx,
        rx: response.into_inner(),
    })
}

/// Connects with `identity` and opens an Attest stream; any failure (TLS refusal included)
/// comes back as a status.
pub async fn attest(
    pki: &ChannelPki,
    addr: SocketAddr,
    identity: Option<&Leaf>,
) -> Result<RawStream, Status> {
    let channel = connect(pki, addr, identity)
        .await
        .map_err(|e| Status::unavailable(format!("connect: {e}")))?;
    open(channel).await
}

impl RawStream {
    /// Sends a message.
    pub async fn send(&self, message: AgentMessage) -> Result<(), RawError> {
        self.tx.send(message).await.map_err(|_| RawError::Closed)
    }

    /// The next message from the approver, or the status that ended the stream.
    pub async fn next(&mut self) -> Result<ApproverMessage, Status> {
        match tokio::time::timeout(Duration::from_secs(10), self.rx.message()).await {
            Err(_) => Err(Status::deadline_exceeded(
                "no message from the approver within 10 s",
            )),
            Ok(Ok(Some(message))) => Ok(message),
            Ok(Ok(None)) => Err(Status::ok("stream ended without a status")),
            Ok(Err(status)) => Err(status),
        }
    }

    /// Sends `message` and returns the Ack (skipping challenges), or the stream's status.
    pub async fn report(&mut self, message: AgentMessage) -> Result<Ack, Status> {
        self.send(message)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        loop {
            if let Some(approver_message::Kind::Ack(ack)) = self.next().await?.kind {
                return Ok(ack);
            }
        }
    }
}

/// A report message: one interface `eth0` with `addresses`, plus `lo`.
pub fn report(sequence: u64, hostname: &str, addresses: &[(IpAddr, u32)]) -> AgentMessage {
    AgentMessage {
        kind: Some(agent_message::Kind::Report(NodeReport {
            hostname: hostname.to_owned(),
            interfaces: vec![
                interface("eth0", addresses),
                interface("lo", &[(IpAddr::from([127, 0, 0, 1]), 8)]),
            ],
            machine_id: String::new(),
            boot_id: String::new(),
            agent_version: "raw-test-client".to_owned(),
            nonce: Vec::new(),
            sequence,
            sources: vec![FactSource::new(sources::INTERFACES, None)],
            metadata: Vec::new(),
            proof_port: 0,
        })),
    }
}

/// The same report answering a challenge.
pub fn with_nonce(mut message: AgentMessage, nonce: Vec<u8>) -> AgentMessage {
    if let Some(agent_message::Kind::Report(report)) = &mut message.kind {
        report.nonce = nonce;
    }
    message
}

/// The same report naming `port` as the node's proof port (`NodeReport.proof_port`).
pub fn with_proof_port(mut message: AgentMessage, port: u32) -> AgentMessage {
    if let Some(agent_message::Kind::Report(report)) = &mut message.kind {
        report.proof_port = port;
    }
    message
}

/// A proof receipt saying that a probe frame with `nonce` arrived on `local` from
/// `sender`, whatever arrived where: a forged or replayed receipt (any nonce length, to
/// test the approver's checks; an IPv4-mapped address is sent as given, in 16 bytes).
pub fn receipt(nonce: &[u8], local: IpAddr, sender: IpAddr) -> AgentMessage {
    receipt_bytes(nonce.to_vec(), ip_bytes(&local), ip_bytes(&sender))
}

/// A proof receipt with raw fields (addresses of any length).
pub fn receipt_bytes(
    nonce: Vec<u8>,
    local_address: Vec<u8>,
    sender_address: Vec<u8>,
) -> AgentMessage {
    AgentMessage {
        kind: Some(agent_message::Kind::Receipt(ProofReceipt {
            nonce,
            local_address,
            sender_address,
        })),
    }
}

/// Writes the probe frame of `nonce` to the proof listener at `addr` (from `source`, or the
/// kernel's choice), as the approver does, and waits until the listener closes the
/// connection; what it wrote back, which is nothing from a well-behaved agent.
pub async fn probe(
    addr: SocketAddr,
    source: Option<IpAddr>,
    nonce: &[u8; proof::NONCE_BYTES],
) -> std::io::Result<Vec<u8>> {
    let mut stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(source) => {
            let socket = match source {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(source, 0))?;
            socket.connect(addr).await?
        }
    };
    stream.write_all(&proof::encode(nonce)).await?;
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await {
        Ok(read) => read.map(|_| answer),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the proof listener kept the connection open for 10 s",
        )),
    }
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// One interface in wire form.
pub fn interface(name: &str, addresses: &[(IpAddr, u32)]) -> NetworkInterface {
    NetworkInterface {
        name: name.to_owned(),
        addresses: addresses
            .iter()
            .map(|(ip, prefix_length)| IpPrefix {
                address: ip_bytes(ip),
                prefix_length: *prefix_length,
            })
            .collect(),
    }
}

/// Opens an Attest stream that sends raw bytes as message bodies (each framed as one
/// gRPC message), for malformed-input tests.
pub async fn open_bytes(
    channel: Channel,
) -> Result<(mpsc::Sender<Vec<u8>>, Streaming<ApproverMessage>), Status> {
    let (tx, rx) = mpsc::channel(16);
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let response = grpc
        .streaming(
            Request::new(ReceiverStream::new(rx)),
            http::uri::PathAndQuery::from_static(ATTEST_PATH),
            BytesCodec,
        )
        .await?;
    Ok((tx, response.into_inner()))
}

/// Sends raw bytes, receives `ApproverMessage`s.
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesCodec;

/// Encoder of [`BytesCodec`].
#[derive(Debug)]
pub struct BytesEncoder;

/// Decoder of [`BytesCodec`].
#[derive(Debug)]
pub struct MessageDecoder;

impl Codec for BytesCodec {
    type Encode = Vec<u8>;
    type Decode = ApproverMessage;
    type Encoder = BytesEncoder;
    type Decoder = MessageDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        MessageDecoder
    }
}

impl Encoder for BytesEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use prost::bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for MessageDecoder {
    type Item = ApproverMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ApproverMessage>, Status> {
        ApproverMessage::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}
