//! Round trips, and damaged logs: every truncation point and bit flip gives an error at the right
//! record, never a panic. `fuzz_one` is the body of the fuzz target (`fuzz/`), also run here over
//! the saved corpus and deterministic mutations of it.

use ftvm_machine::{EffectKind, InputEvent};

use crate::*;

fn header() -> LogHeader {
    LogHeader {
        start: StartState::Boot {
            kernel_sha256: "ab".repeat(32),
            initrd_sha256: None,
            firmware: "builtin".into(),
            cmdline: "console=ttyS0".into(),
            ram_size: 256 << 20,
            virtio: vec![ftvm_virtio::Device::Block(ftvm_virtio::Block::new(
                1 << 20,
                "disk",
                false,
            ))],
        },
        start_hash: 0x1234_5678_9abc_def0_0fed_cba9_8765_4321,
        paths: vec!["/tmp/Image".into()],
    }
}

fn records() -> Vec<Record> {
    vec![
        Record::Checkpoint { icount: 0, hash: 7 },
        Record::Input {
            icount: 10,
            event: InputEvent::ClockAnchor { mtime: 1_000_000 },
        },
        Record::Input {
            icount: 10,
            event: InputEvent::ConsoleInput(b"ls\n".to_vec()),
        },
        Record::Output {
            icount: 5_000,
            effect: EffectKind::Console(b"hello\r\n".to_vec()),
        },
        Record::IoOutput {
            icount: 5_100,
            slot: 0,
            digest: 0xdead_beef_0bad_f00d,
        },
        Record::Input {
            icount: 6_000,
            event: InputEvent::BlockDone {
                slot: 0,
                id: 300,
                status: 0,
                data: vec![0x5a; 4096],
            },
        },
        Record::Input {
            icount: 6_000,
            event: InputEvent::NetRx {
                slot: 1,
                frame: vec![0xff; 60],
            },
        },
        Record::Input {
            icount: 7_000,
            event: InputEvent::Entropy {
                slot: 2,
                id: 0,
                bytes: vec![1, 2, 3],
            },
        },
        Record::Checkpoint {
            icount: 100_000_000,
            hash: u128::MAX,
        },
        Record::Output {
            icount: 100_000_001,
            effect: EffectKind::PowerOff(0),
        },
        Record::End {
            icount: 100_000_001,
            reason: EndReason::Halted,
        },
    ]
}

fn encode(recs: &[Record]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    for r in recs {
        w.append(r).unwrap();
    }
    w.into_inner()
}

fn decode(bytes: &[u8]) -> Result<Vec<Record>, LogError> {
    Reader::new(bytes)?.collect()
}

#[test]
fn round_trip() {
    let bytes = encode(&records());
    let r = Reader::new(&bytes[..]).unwrap();
    assert_eq!(r.header(), &header());
    assert_eq!(decode(&bytes).unwrap(), records());
}

#[test]
fn records_are_small() {
    let one = encode(&[Record::Input {
        icount: 4_000_000,
        event: InputEvent::ClockAnchor { mtime: 400_000 },
    }]);
    let none = encode(&[]);
    assert!(
        one.len() - none.len() <= 16,
        "a clock anchor took {} bytes",
        one.len() - none.len()
    );
}

#[test]
fn decreasing_icount_is_refused() {
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    w.append(&Record::Checkpoint { icount: 5, hash: 0 })
        .unwrap();
    assert!(
        w.append(&Record::Checkpoint { icount: 4, hash: 0 })
            .is_err()
    );
}

#[test]
fn every_truncation_is_reported_at_the_right_record() {
    let recs = records();
    let bytes = encode(&recs);
    let header_len = encode(&[]).len();
    // Where each record ends.
    let mut ends = vec![];
    for i in 1..=recs.len() {
        ends.push(encode(&recs[..i]).len());
    }
    for cut in 0..bytes.len() {
        let result = Reader::new(&bytes[..cut]).map(|r| r.collect::<Vec<_>>());
        if cut < header_len {
            assert!(result.is_err(), "cut {cut} inside the header was accepted");
            continue;
        }
        let items = result.unwrap();
        let complete = ends.iter().filter(|&&e| e <= cut).count();
        if cut == header_len || ends.contains(&cut) {
            assert!(items.iter().all(|r| r.is_ok()) && items.len() == complete);
        } else {
            assert_eq!(items.len(), complete + 1, "cut {cut}");
            match items.last().unwrap() {
                Err(LogError::Truncated { record, .. }) => assert_eq!(*record as usize, complete),
                other => panic!("cut {cut}: expected truncation, got {other:?}"),
            }
        }
    }
}

#[test]
fn every_bit_flip_is_detected() {
    let bytes = encode(&records());
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            if let Ok(recs) = decode(&b) {
                panic!("flip at byte {i} bit {bit} went unnoticed: {recs:?}")
            }
        }
    }
}

/// The fuzz target's body: any input is decoded without panicking or over-allocating, by the
/// reader and by the stream decoder fed in uneven pieces, and both agree on every record.
pub fn fuzz_one(data: &[u8]) {
    let mut read = Vec::new();
    if let Ok(reader) = Reader::new(data) {
        for rec in reader {
            match rec {
                Ok(r) => read.push(r),
                Err(_) => break,
            }
        }
    }
    let mut stream = Stream::new();
    let mut streamed = Vec::new();
    'feed: for piece in data.chunks(7) {
        stream.push(piece);
        loop {
            match stream.next_record() {
                Ok(Some(r)) => streamed.push(r),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    assert_eq!(read, streamed, "the reader and the stream decoder disagree");
}

#[test]
fn a_stream_fed_byte_by_byte_yields_every_record_once_whole() {
    let recs = records();
    let bytes = encode(&recs);
    let mut stream = Stream::new();
    let mut got = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        stream.push(std::slice::from_ref(b));
        while let Some(r) = stream.next_record().unwrap() {
            got.push(r);
        }
        assert!(stream.offset() <= i as u64 + 1);
    }
    assert_eq!(got, recs);
    assert_eq!(stream.offset(), bytes.len() as u64);
    assert_eq!(stream.pending(), 0);
    assert_eq!(stream.header(), Some(&header()));
}

#[test]
fn a_stream_reports_a_damaged_record() {
    let mut bytes = encode(&records());
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let mut stream = Stream::new();
    stream.push(&bytes);
    let err = loop {
        match stream.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the flip went unnoticed"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
}

/// Writes the seed corpus (run by hand after a format change: `cargo test -p ftvm-log --
/// --ignored write_seed_corpus`).
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/log_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let recs = records();
    std::fs::write(dir.join("full"), encode(&recs)).unwrap();
    std::fs::write(dir.join("header-only"), encode(&[])).unwrap();
    std::fs::write(dir.join("one-anchor"), encode(&recs[1..2])).unwrap();
    std::fs::write(dir.join("console"), encode(&recs[2..4])).unwrap();
}

#[test]
fn fuzz_corpus_and_mutations() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/log_decode");
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    corpus.push(encode(&records()));
    assert!(
        corpus.len() >= 2,
        "the saved corpus in {} is missing",
        dir.display()
    );
    // xorshift: deterministic mutations, so a failure reproduces.
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for seed in &corpus {
        fuzz_one(seed);
        for _ in 0..2_000 {
            let mut m = seed.clone();
            for _ in 0..1 + rand() % 4 {
                if m.is_empty() {
                    break;
                }
                let i = (rand() as usize) % m.len();
                match rand() % 3 {
                    0 => m[i] = rand() as u8,
                    1 => m.truncate(i),
                    _ => m.insert(i, rand() as u8),
                }
            }
            fuzz_one(&m);
        }
    }
}

#[test]
fn io_requests_are_logged_as_digests_of_their_content() {
    let write = |byte| ftvm_virtio::Request::Block {
        id: 1,
        op: ftvm_virtio::BlockOp::Write {
            sector: 8,
            data: vec![byte; 512],
        },
    };
    let rec = Record::Output {
        icount: 9,
        effect: EffectKind::Io {
            slot: 0,
            request: write(1),
        },
    };
    let back = decode(&encode(&[rec])).unwrap();
    assert_eq!(
        back,
        vec![Record::IoOutput {
            icount: 9,
            slot: 0,
            digest: io_digest(&write(1)),
        }]
    );
    assert_ne!(io_digest(&write(1)), io_digest(&write(2)));
}
