//! Address translation (Sv39, Sv48), the TLB, and every memory access the hart makes.
//!
//! The TLB is direct-mapped and split by access kind (load, store, fetch), so a hit needs no
//! permission check: an entry exists only for an access that was allowed. Each entry's tag holds
//! the virtual page and the *context* it was checked in (effective privilege, SUM, MXR), so a
//! privilege change needs no flush; satp writes and SFENCE.VMA flush everything. Only RAM pages
//! are cached; device pages take the slow path every time.
//! PMP registers are stored but not enforced: one hart, no untrusted M-mode code.

use crate::hart::{Hart, Privilege, Trap, cause, event, mstatus};
use crate::{Bus, Ram};

const TLB_BITS: u32 = 10;
const TLB_SIZE: usize = 1 << TLB_BITS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Load = 0,
    Store = 1,
    Fetch = 2,
}

/// Tag and page offset side by side: a hit reads one cache line.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    tag: u64,
    /// RAM offset of the page.
    off: usize,
}

pub(crate) struct Tlb {
    /// Fixed-size, so the masked index needs no bounds check.
    entries: Box<[Entry; 3 * TLB_SIZE]>,
    /// The page the last fetch came from: (vpn, RAM offset), or vpn u64::MAX.
    fetch_vpn: u64,
    fetch_off: usize,
}

impl Tlb {
    pub fn new() -> Tlb {
        Tlb {
            entries: Box::new([Entry::default(); 3 * TLB_SIZE]),
            fetch_vpn: u64::MAX,
            fetch_off: 0,
        }
    }

    pub fn flush(&mut self) {
        self.entries.fill(Entry::default());
        self.flush_fetch();
    }

    pub fn flush_fetch(&mut self) {
        self.fetch_vpn = u64::MAX;
    }

    #[inline(always)]
    fn key(vaddr: u64, ctx: u64) -> u64 {
        ((vaddr >> 12) << 5) | (ctx << 1) | 1
    }

    #[inline(always)]
    fn slot(kind: Access, vaddr: u64) -> usize {
        kind as usize * TLB_SIZE + ((vaddr >> 12) as usize & (TLB_SIZE - 1))
    }

    #[inline(always)]
    fn get(&self, kind: Access, vaddr: u64, ctx: u64) -> Option<usize> {
        let i = Self::slot(kind, vaddr);
        let e = self.entries[i];
        (e.tag == Self::key(vaddr, ctx)).then_some(e.off)
    }

    fn put(&mut self, kind: Access, vaddr: u64, ctx: u64, page_off: usize) {
        let i = Self::slot(kind, vaddr);
        self.entries[i] = Entry {
            tag: Self::key(vaddr, ctx),
            off: page_off,
        };
    }
}

fn page_fault(kind: Access, vaddr: u64) -> Trap {
    let c = match kind {
        Access::Load => cause::LOAD_PAGE,
        Access::Store => cause::STORE_PAGE,
        Access::Fetch => cause::FETCH_PAGE,
    };
    Trap {
        cause: c,
        tval: vaddr,
    }
}

fn access_fault(kind: Access, vaddr: u64) -> Trap {
    let c = match kind {
        Access::Load => cause::LOAD_ACCESS,
        Access::Store => cause::STORE_ACCESS,
        Access::Fetch => cause::FETCH_ACCESS,
    };
    Trap {
        cause: c,
        tval: vaddr,
    }
}

mod pte {
    pub const V: u64 = 1;
    pub const R: u64 = 2;
    pub const W: u64 = 4;
    pub const X: u64 = 8;
    pub const U: u64 = 16;
    pub const A: u64 = 64;
    pub const D: u64 = 128;
    /// Bits 63..54: Svnapot, Svpbmt and reserved; none are implemented, so any set is a fault.
    pub const HIGH: u64 = 0x3ff << 54;
    pub const PPN: u64 = (1 << 44) - 1;
}

impl Hart {
    /// The privilege loads and stores run at (MPRV) and the bits their permission depends on.
    #[inline(always)]
    fn data_ctx(&self) -> (Privilege, u64) {
        self.data_ctx
    }

    /// Recomputes [`Hart::data_ctx`]; called whenever mstatus or the privilege changes.
    pub(crate) fn update_data_ctx(&mut self) {
        self.data_ctx = self.compute_data_ctx();
    }

    fn compute_data_ctx(&self) -> (Privilege, u64) {
        let st = self.s.mstatus;
        let p = if self.s.privilege == Privilege::Machine && st & mstatus::MPRV != 0 {
            Privilege::from_bits(st >> mstatus::MPP_SHIFT)
        } else {
            self.s.privilege
        };
        let ctx = p as u64 | ((st >> 18) & 3) << 2; // SUM, MXR
        (p, ctx)
    }

    /// Translates `vaddr` for `kind` at privilege `p`: the physical address, or the fault.
    pub(crate) fn translate(
        &mut self,
        vaddr: u64,
        kind: Access,
        p: Privilege,
        ram: &mut Ram,
    ) -> Result<u64, Trap> {
        let mode = self.s.satp >> 60;
        if p == Privilege::Machine || mode == 0 {
            return Ok(vaddr);
        }
        let levels = if mode == 9 { 4 } else { 3 };
        let va_bits = 12 + 9 * levels;
        // Bits above the address width must copy its top bit.
        let top = (vaddr as i64) >> (va_bits - 1);
        if top != 0 && top != -1 {
            return Err(page_fault(kind, vaddr));
        }
        let mut table = (self.s.satp & pte::PPN) << 12;
        for level in (0..levels).rev() {
            let index = (vaddr >> (12 + 9 * level)) & 0x1ff;
            let addr = table + index * 8;
            let Some(mut e) = ram.read(addr, 8) else {
                return Err(access_fault(kind, vaddr));
            };
            if e & pte::V == 0 || (e & pte::R == 0 && e & pte::W != 0) || e & pte::HIGH != 0 {
                return Err(page_fault(kind, vaddr));
            }
            if e & (pte::R | pte::X) == 0 {
                if level == 0 {
                    return Err(page_fault(kind, vaddr));
                }
                table = ((e >> 10) & pte::PPN) << 12;
                continue;
            }
            // A leaf: permissions.
            let user = e & pte::U != 0;
            let sum = self.s.mstatus & mstatus::SUM != 0;
            let allowed = match kind {
                Access::Fetch => {
                    e & pte::X != 0 && (if p == Privilege::User { user } else { !user })
                }
                _ => {
                    let priv_ok = if p == Privilege::User {
                        user
                    } else {
                        !user || sum
                    };
                    let rw_ok = if kind == Access::Store {
                        e & pte::W != 0
                    } else {
                        e & pte::R != 0 || (self.s.mstatus & mstatus::MXR != 0 && e & pte::X != 0)
                    };
                    priv_ok && rw_ok
                }
            };
            if !allowed {
                return Err(page_fault(kind, vaddr));
            }
            let ppn = (e >> 10) & pte::PPN;
            let span_pages = (1u64 << (9 * level)) - 1;
            if ppn & span_pages != 0 {
                return Err(page_fault(kind, vaddr)); // misaligned superpage
            }
            // Hardware A/D update, as QEMU does.
            let want = pte::A | if kind == Access::Store { pte::D } else { 0 };
            if e & want != want {
                e |= want;
                if ram.write(addr, 8, e).is_none() {
                    return Err(access_fault(kind, vaddr));
                }
            }
            let offset_mask = (1u64 << (12 + 9 * level)) - 1;
            return Ok((ppn << 12) | (vaddr & offset_mask));
        }
        Err(page_fault(kind, vaddr))
    }

    /// Translates and caches the page of `vaddr` if it is RAM; returns the physical address.
    #[inline(never)]
    fn translate_fill(
        &mut self,
        vaddr: u64,
        kind: Access,
        p: Privilege,
        ctx: u64,
        ram: &mut Ram,
    ) -> Result<u64, Trap> {
        let paddr = self.translate(vaddr, kind, p, ram)?;
        crate::hart::count!(self, tlb_fills);
        let page = paddr & !0xfff;
        if let Some(off) = ram.offset(page, 4096) {
            self.tlb.put(kind, vaddr, ctx, off);
        }
        Ok(paddr)
    }

    /// Fetches the instruction at pc: 32 bits, of which only the low 16 matter if compressed.
    #[inline(always)]
    pub(crate) fn fetch(&mut self, ram: &mut Ram) -> Result<u32, Trap> {
        let pc = self.s.pc;
        let in_page = (pc & 0xfff) as usize;
        if pc >> 12 == self.tlb.fetch_vpn && in_page <= 4092 {
            return Ok(ram.load_at(self.tlb.fetch_off + in_page, 4) as u32);
        }
        self.fetch_slow(ram)
    }

    /// The RAM offset of the instruction at pc (translating its page if needed).
    #[inline(always)]
    pub(crate) fn fetch_offset(&mut self, ram: &mut Ram) -> Result<usize, Trap> {
        let pc = self.s.pc;
        if pc >> 12 != self.tlb.fetch_vpn {
            let p = self.s.privilege;
            self.fetch_half(pc, p, ram)?;
        }
        Ok(self.tlb.fetch_off + (pc & 0xfff) as usize)
    }

    #[inline(never)]
    fn fetch_slow(&mut self, ram: &mut Ram) -> Result<u32, Trap> {
        let pc = self.s.pc;
        let p = self.s.privilege;
        let lo = self.fetch_half(pc, p, ram)?;
        if lo & 3 != 3 {
            return Ok(lo);
        }
        let hi = self.fetch_half(pc + 2, p, ram)?;
        Ok(lo | (hi << 16))
    }

    fn fetch_half(&mut self, vaddr: u64, p: Privilege, ram: &mut Ram) -> Result<u32, Trap> {
        // Fetch permission depends on the privilege only (not SUM or MXR): that is its context.
        if let Some(off) = self.tlb.get(Access::Fetch, vaddr, p as u64) {
            self.tlb.fetch_vpn = vaddr >> 12;
            self.tlb.fetch_off = off;
            return Ok(ram.load_at(off + (vaddr & 0xfff) as usize, 2) as u32);
        }
        let paddr = self
            .translate(vaddr, Access::Fetch, p, ram)
            .map_err(|mut t| {
                t.tval = vaddr;
                t
            })?;
        let page = paddr & !0xfff;
        let off = ram
            .offset(page, 4096)
            .ok_or(access_fault(Access::Fetch, vaddr))?;
        self.tlb.put(Access::Fetch, vaddr, p as u64, off);
        self.tlb.fetch_vpn = vaddr >> 12;
        self.tlb.fetch_off = off;
        Ok(ram.load_at(off + (paddr & 0xfff) as usize, 2) as u32)
    }

    /// The RAM offset of a data access that hits the TLB within one page.
    #[inline(always)]
    pub(crate) fn tlb_hit(&self, kind: Access, vaddr: u64, size: u8) -> Option<usize> {
        let in_page = (vaddr & 0xfff) as usize;
        if in_page + size as usize <= 4096 {
            return self
                .tlb
                .get(kind, vaddr, self.data_ctx.1)
                .map(|off| off + in_page);
        }
        None
    }

    #[inline(always)]
    pub(crate) fn load<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        vaddr: u64,
        size: u8,
    ) -> Result<u64, Trap> {
        let (p, ctx) = self.data_ctx();
        let in_page = (vaddr & 0xfff) as usize;
        if in_page + size as usize <= 4096
            && let Some(off) = self.tlb.get(Access::Load, vaddr, ctx)
        {
            return Ok(ram.load_at(off + in_page, size));
        }
        self.load_slow(ram, bus, vaddr, size, p, ctx)
    }

    #[inline(never)]
    fn load_slow<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        vaddr: u64,
        size: u8,
        p: Privilege,
        ctx: u64,
    ) -> Result<u64, Trap> {
        if (vaddr & 0xfff) + size as u64 > 4096 {
            // Crosses a page: byte by byte, each through its own translation.
            let mut v = 0;
            for i in 0..size as u64 {
                let a = vaddr.wrapping_add(i);
                let pa = self.translate_fill(a, Access::Load, p, ctx, ram)?;
                let b = ram.read(pa, 1).ok_or(access_fault(Access::Load, a))?;
                v |= b << (8 * i);
            }
            return Ok(v);
        }
        let paddr = self.translate_fill(vaddr, Access::Load, p, ctx, ram)?;
        if let Some(v) = ram.read(paddr, size) {
            return Ok(v);
        }
        self.event |= event::MMIO;
        let now = self.mtime();
        bus.mmio_read(paddr, size, now)
            .map_err(|_| access_fault(Access::Load, vaddr))
    }

    #[inline(always)]
    pub(crate) fn store<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        vaddr: u64,
        size: u8,
        value: u64,
    ) -> Result<(), Trap> {
        let (p, ctx) = self.data_ctx();
        let in_page = (vaddr & 0xfff) as usize;
        if in_page + size as usize <= 4096
            && let Some(off) = self.tlb.get(Access::Store, vaddr, ctx)
        {
            if ram.store_at(off + in_page, size, value) {
                self.event |= event::CODE;
            }
            return Ok(());
        }
        self.store_slow(ram, bus, vaddr, size, value, p, ctx)
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn store_slow<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        vaddr: u64,
        size: u8,
        value: u64,
        p: Privilege,
        ctx: u64,
    ) -> Result<(), Trap> {
        if (vaddr & 0xfff) + size as u64 > 4096 {
            // Both pages must be writable before any byte is written.
            let last = vaddr.wrapping_add(size as u64 - 1);
            self.translate_fill(vaddr, Access::Store, p, ctx, ram)?;
            self.translate_fill(last, Access::Store, p, ctx, ram)?;
            for i in 0..size as u64 {
                let a = vaddr.wrapping_add(i);
                let pa = self.translate(a, Access::Store, p, ram)?;
                ram.write(pa, 1, value >> (8 * i))
                    .ok_or(access_fault(Access::Store, a))?;
            }
            return Ok(());
        }
        let paddr = self.translate_fill(vaddr, Access::Store, p, ctx, ram)?;
        if ram.write(paddr, size, value).is_some() {
            return Ok(());
        }
        self.event |= event::MMIO;
        let now = self.mtime();
        bus.mmio_write(paddr, size, value, now)
            .map_err(|_| access_fault(Access::Store, vaddr))
    }

    /// The physical address for an atomic access (checked for write permission and alignment).
    pub(crate) fn amo_paddr(
        &mut self,
        ram: &mut Ram,
        vaddr: u64,
        size: u8,
        lr: bool,
    ) -> Result<u64, Trap> {
        if !vaddr.is_multiple_of(size as u64) {
            let c = if lr {
                cause::LOAD_MISALIGNED
            } else {
                cause::STORE_MISALIGNED
            };
            return Err(Trap {
                cause: c,
                tval: vaddr,
            });
        }
        let (p, _) = self.data_ctx();
        let kind = if lr { Access::Load } else { Access::Store };
        self.translate(vaddr, kind, p, ram)
    }

    /// Physical read for atomics: RAM or, rarely, a device.
    pub(crate) fn phys_read<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        paddr: u64,
        size: u8,
        vaddr: u64,
        kind: Access,
    ) -> Result<u64, Trap> {
        if let Some(v) = ram.read(paddr, size) {
            return Ok(v);
        }
        self.event |= event::MMIO;
        let now = self.mtime();
        bus.mmio_read(paddr, size, now)
            .map_err(|_| access_fault(kind, vaddr))
    }

    pub(crate) fn phys_write<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        paddr: u64,
        size: u8,
        value: u64,
        vaddr: u64,
    ) -> Result<(), Trap> {
        if ram.write(paddr, size, value).is_some() {
            return Ok(());
        }
        self.event |= event::MMIO;
        let now = self.mtime();
        bus.mmio_write(paddr, size, value, now)
            .map_err(|_| access_fault(Access::Store, vaddr))
    }
}
