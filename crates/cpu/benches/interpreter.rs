//! The interpreter's hot loop: a tight integer loop with loads and stores, in M-mode (bare) and
//! in S-mode under Sv39, 10 million instructions per iteration.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ftvm_cpu::{Bus, BusFault, Hart, Privilege, Ram};

struct NoDevices;

impl Bus for NoDevices {
    fn mmio_read(&mut self, _: u64, _: u8, _: u64) -> Result<u64, BusFault> {
        Err(BusFault)
    }
    fn mmio_write(&mut self, _: u64, _: u8, _: u64, _: u64) -> Result<(), BusFault> {
        Err(BusFault)
    }
}

const BASE: u64 = 0x8000_0000;
const INSNS: u64 = 10_000_000;

/// loop: ld t0, 0(a1); addi t0, t0, 1; sd t0, 0(a1); addi a0, a0, 1; xor t1, t0, a0; j loop
fn program(ram: &mut Ram) {
    let code: [u32; 6] = [
        0x0005_b283,
        0x0012_8293,
        0x0055_b023,
        0x0015_0513,
        0x00a2_c333,
        0xfedf_f06f,
    ];
    for (i, w) in code.iter().enumerate() {
        ram.write(BASE + 4 * i as u64, 4, *w as u64).unwrap();
    }
}

fn hart(paging: bool, ram: &mut Ram) -> Hart {
    let mut h = Hart::new(0);
    h.set_pc(BASE);
    h.set_x(11, BASE + 0x10_0000);
    if paging {
        // One Sv39 gigapage mapping the RAM at its own address.
        let root = BASE + 0x20_0000;
        ram.write(root + 2 * 8, 8, ((BASE >> 12) << 10) | 0xcf)
            .unwrap();
        h.set_csr(0x180, (8 << 60) | (root >> 12));
        h.set_privilege(Privilege::Supervisor);
    }
    h
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("interpreter");
    g.throughput(Throughput::Elements(INSNS));
    g.sample_size(10);
    for (name, paging) in [("bare", false), ("sv39", true)] {
        let mut ram = Ram::new(BASE, 4 << 20);
        program(&mut ram);
        let mut h = hart(paging, &mut ram);
        g.bench_function(name, |b| {
            b.iter(|| {
                let until = h.icount() + INSNS;
                h.run(&mut ram, &mut NoDevices, until)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
