//! Log encoding and decoding cost per record (the FT logging channel's hot path).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ftvm_log::{LogHeader, Reader, Record, StartState, Writer};
use ftvm_machine::{EffectKind, InputEvent};

fn records() -> Vec<Record> {
    (0..10_000u64)
        .map(|i| match i % 3 {
            0 => Record::Input {
                icount: i * 200_000,
                event: InputEvent::ClockAnchor { mtime: i * 2_000 },
            },
            1 => Record::Output {
                icount: i * 200_000,
                effect: EffectKind::Console(b"console line\r\n".to_vec()),
            },
            _ => Record::Checkpoint {
                icount: i * 200_000,
                hash: i as u128 * 0x9e37_79b9,
            },
        })
        .collect()
}

fn header() -> LogHeader {
    LogHeader {
        start: StartState::Snapshot {
            path: "/tmp/s".into(),
        },
        start_hash: 1,
        paths: vec![],
    }
}

fn bench(c: &mut Criterion) {
    let recs = records();
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| {
            let mut w = Writer::new(Vec::with_capacity(1 << 20), &header()).unwrap();
            for r in &recs {
                w.append(r).unwrap();
            }
            w.into_inner()
        })
    });
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    for r in &recs {
        w.append(r).unwrap();
    }
    let bytes = w.into_inner();
    g.bench_function("decode", |b| {
        b.iter(|| Reader::new(&bytes[..]).unwrap().count())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
