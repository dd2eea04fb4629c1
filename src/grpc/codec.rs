//! The protobuf codec of the services generated from `proto/` (`build.rs`
//! names it): tonic-prost's encoder, and a decoder that hands prost the
//! message as one byte slice.
//!
//! tonic-prost decodes straight from tonic's `DecodeBuf`, so each of the
//! few hundred varints, keys and lengths of a request with named features
//! moves a `BytesMut` cursor through two layers of `Buf`. The message is
//! already contiguous there; decoding the slice lets prost use its
//! monomorphised slice path, which cut a named `Score` call's decoding by
//! a third (BENCHMARKS.md, session 17). Bytes and errors are exactly
//! tonic-prost's, so the admission layer treats every service alike.

use std::marker::PhantomData;

use bytes::Buf;
use prost::{DecodeError, Message};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstEncoder;

/// [`tonic_prost::ProstCodec`] with [`SliceDecoder`].
pub struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

/// Decodes a `U` from the contiguous bytes tonic has gathered for it.
pub struct SliceDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // tonic-prost's status for a message that does not decode.
        decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// Decodes all of `buf` as one `U`, from a slice when `buf` is one.
fn decode<U: Message + Default>(mut buf: impl Buf) -> Result<U, DecodeError> {
    let len = buf.remaining();
    let chunk = buf.chunk();
    // tonic keeps a message in one `BytesMut`, so this is the whole of it;
    // should that change, prost still decodes the buffer itself.
    if chunk.len() == len {
        let decoded = U::decode(chunk);
        buf.advance(len);
        decoded
    } else {
        U::decode(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::pb;

    fn request() -> pb::ScoreRequest {
        pb::ScoreRequest {
            subject_id: "subject-1".into(),
            features: pb::features([(
                "MOSTYPE",
                pb::FeatureValue {
                    kind: Some(pb::feature_value::Kind::Integer(33)),
                },
            )]),
            values: vec![1.0, 2.5],
            ..Default::default()
        }
    }

    #[test]
    fn decodes_a_contiguous_message_whole_and_consumes_it() {
        let mut bytes = bytes::BytesMut::from(&request().encode_to_vec()[..]);
        assert_eq!(decode::<pb::ScoreRequest>(&mut bytes).unwrap(), request());
        assert!(bytes.is_empty());
    }

    #[test]
    fn decodes_a_message_in_pieces_too() {
        let encoded = request().encode_to_vec();
        let (head, tail) = encoded.split_at(encoded.len() / 2);
        assert_eq!(
            decode::<pb::ScoreRequest>(head.chain(tail)).unwrap(),
            request()
        );
    }

    #[test]
    fn a_message_that_does_not_decode_is_an_error() {
        // Field 2 (`subject_id`, a string) whose length runs past the end.
        let error = decode::<pb::ScoreRequest>(&[0x12, 0x05, b'a'][..]).unwrap_err();
        assert!(
            error.to_string().contains("ScoreRequest.subject_id"),
            "{error}"
        );
    }
}
