//! Codec speed on the message a POS authorization carries. Run by hand:
//! `cargo bench --bench codec`; figures go in README's Performance section.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use isoswitch::iso8583::{Message, Mti};

/// An 0100 with fields 2, 3, 4, 7, 11, 12, 13, 14, 18, 22, 25, 32, 35, 37, 41, 42, 43, 49.
fn auth_request() -> Message {
    let mut msg = Message::new(Mti::from_static("0100"));
    let fields: [(u8, &str); 18] = [
        (2, "4111111111111111"),
        (3, "000000"),
        (4, "000000012345"),
        (7, "1123184100"),
        (11, "000001"),
        (12, "184100"),
        (13, "1123"),
        (14, "2812"),
        (18, "5411"),
        (22, "051"),
        (25, "00"),
        (32, "12345678901"),
        (35, "4111111111111111=28121010000000000000"),
        (37, "123456789012"),
        (41, "TERM0001"),
        (42, "MERCHANT0000001"),
        (43, "ISOSWITCH TEST STORE    LONDON       GB"),
        (49, "840"),
    ];
    for (n, v) in fields {
        msg.set(n, v).expect("data field");
    }
    msg
}

fn codec(c: &mut Criterion) {
    let spec = isoswitch::specs::builtin("iso87ascii")
        .expect("shipped spec")
        .expect("compiles");
    let msg = auth_request();
    let wire = Bytes::from(msg.encode(&spec).expect("encodes"));
    let decoded = Message::decode(&spec, wire.clone()).expect("decodes");

    let mut group = c.benchmark_group("codec");
    group.bench_function("decode_0100_iso87ascii", |b| {
        b.iter(|| Message::decode(black_box(&spec), black_box(wire.clone())))
    });
    let mut out = Vec::with_capacity(512);
    group.bench_function("encode_0100_iso87ascii", |b| {
        b.iter(|| {
            out.clear();
            black_box(&decoded).encode_into(black_box(&spec), &mut out)
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
