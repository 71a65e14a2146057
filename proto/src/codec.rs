//! The approver's side of the `Attest` stream as a tonic codec with small buffers: the
//! wire contract's messages, encoded and decoded with the sizes this contract needs.

use prost::Message as _;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::v1::{AgentMessage, ApproverMessage};

/// Protobuf codec for the Attest stream with small initial buffers: a typical report is
/// well under a kilobyte, and these buffers exist once per live stream. Messages that do
/// not decode are `invalid_argument` (the wire contract's status for a bad report).
#[derive(Clone, Copy, Debug, Default)]
pub struct AttestCodec;

/// Initial size of each per-stream codec buffer (they grow on demand).
const CODEC_BUFFER_BYTES: usize = 512;

/// Encoder half of [`AttestCodec`].
#[derive(Debug)]
pub struct AttestEncoder;

/// Decoder half of [`AttestCodec`].
#[derive(Debug)]
pub struct AttestDecoder;

impl Codec for AttestCodec {
    type Encode = ApproverMessage;
    type Decode = AgentMessage;
    type Encoder = AttestEncoder;
    type Decoder = AttestDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        AttestEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        AttestDecoder
    }
}

impl Encoder for AttestEncoder {
    type Item = ApproverMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding a response: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(CODEC_BUFFER_BYTES, 4 * 1024)
    }
}

impl Decoder for AttestDecoder {
    type Item = AgentMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        AgentMessage::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed message: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(CODEC_BUFFER_BYTES, 4 * 1024)
    }
}
