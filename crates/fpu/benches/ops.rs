//! ftvm's F/D operations against Berkeley SoftFloat on the same operands: FMADD, FDIV, FSQRT and
//! FCVT (to and from integers), both formats. SoftFloat is timed as ftvm used it before its own
//! arithmetic: flags cleared before the operation and read after it.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ftvm_fpu::format::{Double, Single};
use ftvm_fpu::round::Rounding;
use ftvm_fpu::{arith, convert};
use softfloat_wrapper::{ExceptionFlags, F32, F64, Float, RoundingMode};
use std::hint::black_box;

const N: usize = 4096;

/// Operands spread over the normal range, with some subnormals and exact cases: a fixed
/// pseudo-random sequence, the same for both implementations.
fn operands(double: bool) -> Vec<u64> {
    let mut x = 0x1234_5678_9abc_def0u64;
    (0..N)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if double {
                // Exponents within 2^-60..2^60, a positive half of the time.
                (x & 0x800f_ffff_ffff_ffff) | ((1023 - 60 + (x >> 52) % 120) << 52)
            } else {
                (x & 0x807f_ffff) | (((127 - 30 + (x >> 40) % 60) & 0xff) << 23)
            }
        })
        .collect()
}

fn softfloat<T>(op: impl FnOnce() -> T) -> (T, u8) {
    ExceptionFlags::default().set();
    let r = op();
    let mut flags = ExceptionFlags::default();
    flags.get();
    (r, flags.to_bits())
}

fn bench_pair(
    c: &mut Criterion,
    name: &str,
    ours: impl Fn(u64, u64, u64) -> u64,
    theirs: impl Fn(u64, u64, u64) -> u64,
    double: bool,
) {
    let v = operands(double);
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("ftvm", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for i in 0..N {
                acc ^= ours(v[i], v[(i + 1) % N], v[(i + 7) % N]);
            }
            black_box(acc)
        })
    });
    g.bench_function("softfloat", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for i in 0..N {
                acc ^= theirs(v[i], v[(i + 1) % N], v[(i + 7) % N]);
            }
            black_box(acc)
        })
    });
    g.finish();
}

const RNE: Rounding = Rounding::NearestEven;
const SF_RNE: RoundingMode = RoundingMode::TiesToEven;

fn bench(c: &mut Criterion) {
    bench_pair(
        c,
        "fmadd.d",
        |a, b, x| {
            let mut fl = 0;
            arith::fused_mul_add::<Double>(a, b, x, RNE, &mut fl) ^ fl as u64
        },
        |a, b, x| {
            let (r, fl) = softfloat(|| {
                F64::from_bits(a).fused_mul_add(F64::from_bits(b), F64::from_bits(x), SF_RNE)
            });
            r.to_bits() ^ fl as u64
        },
        true,
    );
    bench_pair(
        c,
        "fmadd.s",
        |a, b, x| {
            let mut fl = 0;
            arith::fused_mul_add::<Single>(a, b, x, RNE, &mut fl) ^ fl as u64
        },
        |a, b, x| {
            let (r, fl) = softfloat(|| {
                let (a, b, x) = (a as u32, b as u32, x as u32);
                F32::from_bits(a).fused_mul_add(F32::from_bits(b), F32::from_bits(x), SF_RNE)
            });
            r.to_bits() as u64 ^ fl as u64
        },
        false,
    );
    bench_pair(
        c,
        "fdiv.d",
        |a, b, _| {
            let mut fl = 0;
            arith::div::<Double>(a, b, RNE, &mut fl) ^ fl as u64
        },
        |a, b, _| {
            let (r, fl) = softfloat(|| F64::from_bits(a).div(F64::from_bits(b), SF_RNE));
            r.to_bits() ^ fl as u64
        },
        true,
    );
    bench_pair(
        c,
        "fdiv.s",
        |a, b, _| {
            let mut fl = 0;
            arith::div::<Single>(a, b, RNE, &mut fl) ^ fl as u64
        },
        |a, b, _| {
            let (r, fl) =
                softfloat(|| F32::from_bits(a as u32).div(F32::from_bits(b as u32), SF_RNE));
            r.to_bits() as u64 ^ fl as u64
        },
        false,
    );
    bench_pair(
        c,
        "fsqrt.d",
        |a, _, _| {
            let mut fl = 0;
            arith::sqrt::<Double>(a & !(1 << 63), RNE, &mut fl) ^ fl as u64
        },
        |a, _, _| {
            let (r, fl) = softfloat(|| F64::from_bits(a & !(1 << 63)).sqrt(SF_RNE));
            r.to_bits() ^ fl as u64
        },
        true,
    );
    bench_pair(
        c,
        "fsqrt.s",
        |a, _, _| {
            let mut fl = 0;
            arith::sqrt::<Single>(a & 0x7fff_ffff, RNE, &mut fl) ^ fl as u64
        },
        |a, _, _| {
            let (r, fl) = softfloat(|| F32::from_bits(a as u32 & 0x7fff_ffff).sqrt(SF_RNE));
            r.to_bits() as u64 ^ fl as u64
        },
        false,
    );
    bench_pair(
        c,
        "fcvt.l.d",
        |a, _, _| {
            let mut fl = 0;
            convert::to_int::<Double>(a, convert::Int::I64, RNE, &mut fl) ^ fl as u64
        },
        |a, _, _| {
            let (r, fl) = softfloat(|| F64::from_bits(a).to_i64(SF_RNE, true));
            r as u64 ^ fl as u64
        },
        true,
    );
    bench_pair(
        c,
        "fcvt.d.l",
        |a, _, _| {
            let mut fl = 0;
            convert::from_int::<Double>(a, convert::Int::I64, RNE, &mut fl) ^ fl as u64
        },
        |a, _, _| {
            let (r, fl) = softfloat(|| F64::from_i64(a as i64, SF_RNE));
            r.to_bits() ^ fl as u64
        },
        true,
    );
    bench_pair(
        c,
        "fadd.d",
        |a, b, _| {
            let mut fl = 0;
            arith::add::<Double>(a, b, RNE, &mut fl) ^ fl as u64
        },
        |a, b, _| {
            let (r, fl) = softfloat(|| F64::from_bits(a).add(F64::from_bits(b), SF_RNE));
            r.to_bits() ^ fl as u64
        },
        true,
    );
    bench_pair(
        c,
        "fmul.d",
        |a, b, _| {
            let mut fl = 0;
            arith::mul::<Double>(a, b, RNE, &mut fl) ^ fl as u64
        },
        |a, b, _| {
            let (r, fl) = softfloat(|| F64::from_bits(a).mul(F64::from_bits(b), SF_RNE));
            r.to_bits() ^ fl as u64
        },
        true,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
