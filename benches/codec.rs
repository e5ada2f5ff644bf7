//! Codec speed on the message a POS authorization carries. Run by hand:
//! `cargo bench --bench codec`; figures go in README's Performance section.
//! `decode_0100_composite` is the same message plus a composite field 48 of
//! three subfields that it does not read: decoding it must cost about what the
//! plain decode does, since subfields are only parsed when asked for.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use isoswitch::iso8583::{Composite, Message, Mti, Spec};

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
    let composite_spec = Spec::from_toml_str(
        include_str!("../tests/fixtures/specs/composite-iso87ascii.toml"),
        "composite-iso87ascii",
    )
    .expect("test spec compiles");
    let mut with_48 = auth_request();
    let pds = Composite::new()
        .with("22", "MERCHANT IND 01")
        .with("33", "PANMAP 0001")
        .with("42", "2100001");
    with_48
        .set_subfields(&composite_spec, 48, &pds)
        .expect("subfields encode");
    let composite_wire = Bytes::from(with_48.encode(&composite_spec).expect("encodes"));
    group.bench_function("decode_0100_composite", |b| {
        b.iter(|| {
            Message::decode(
                black_box(&composite_spec),
                black_box(composite_wire.clone()),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
