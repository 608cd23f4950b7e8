//! Codec throughput: decode and encode PUBLISH by payload size (0 B to 1 MiB),
//! for 3.1.1 and for 5.0 with a few properties.
//!
//! Decoding is measured from a `BytesMut` holding exactly one packet (built
//! outside the timed part); the payload is split off, not copied. Encoding
//! appends to a reused buffer, so it includes copying the payload.
//!
//! Run: `cargo bench -p broker --bench codec` (`-- --test` runs each once).

use broker::codec::{
    Limits, Packet, ProtocolVersion, Publish, PublishProperties, QoS, MAX_REMAINING_LENGTH,
};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

const PAYLOAD_SIZES: [usize; 5] = [0, 64, 1024, 64 * 1024, 1024 * 1024];

fn publish(version: ProtocolVersion, payload_size: usize) -> Packet {
    let properties = if version.is_v5() {
        PublishProperties {
            payload_format_indicator: Some(false),
            message_expiry_interval: Some(3600),
            content_type: Some(ByteString::from_static("application/octet-stream")),
            user_properties: vec![(
                ByteString::from_static("trace-id"),
                ByteString::from_static("4bf92f3577b34da6"),
            )],
            subscription_identifiers: vec![42],
            ..Default::default()
        }
    } else {
        PublishProperties::default()
    };
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: ByteString::from_static("sensors/building-1/floor-2/temperature"),
        packet_id: Some(4242),
        payload: Bytes::from(vec![0xA5; payload_size]),
        properties,
    })
}

fn versions() -> [(&'static str, ProtocolVersion); 2] {
    [
        ("3.1.1", ProtocolVersion::V311),
        ("5.0", ProtocolVersion::V5),
    ]
}

fn decode_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_publish");
    for (name, version) in versions() {
        let limits = Limits {
            max_packet_size: MAX_REMAINING_LENGTH as u32 + 5,
            version,
            refuse_control_characters: true,
        };
        for size in PAYLOAD_SIZES {
            let packet = publish(version, size);
            let mut encoded = BytesMut::new();
            packet
                .encode(version, &mut encoded)
                .expect("bench packet encodes");
            group.throughput(Throughput::Bytes(encoded.len() as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &encoded, |b, encoded| {
                b.iter_batched(
                    || encoded.clone(),
                    |mut buf| Packet::decode(&mut buf, &limits).expect("decodes"),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

fn encode_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_publish");
    for (name, version) in versions() {
        for size in PAYLOAD_SIZES {
            let packet = publish(version, size);
            let mut buf = BytesMut::with_capacity(size + 256);
            let len = packet
                .encode(version, &mut buf)
                .expect("bench packet encodes");
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &packet, |b, packet| {
                b.iter(|| {
                    buf.clear();
                    packet.encode(version, &mut buf).expect("encodes")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decode_publish, encode_publish);
criterion_main!(benches);
