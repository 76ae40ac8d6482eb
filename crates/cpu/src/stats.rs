//! What the interpreter does, counted (only with the `stats` feature: the counters sit on the
//! hot path, so the default build has none). They say where the fast path leaves its blocks,
//! which is what block linking and the JIT must make cheap (issue 17, stage 1).

/// Counts since the hart was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Blocks entered, and blocks decoded (cache misses).
    pub blocks_run: u64,
    pub blocks_decoded: u64,
    /// Instructions run one at a time (a block that did not fit before the stop, or none).
    pub single_steps: u64,
    /// How a block that was entered ended.
    pub ended_taken_branch: u64,
    pub ended_jump: u64,
    pub ended_indirect_jump: u64,
    pub ended_system: u64,
    /// The block reached the end of its page, or its longest (`MAX_OPS`).
    pub ended_page: u64,
    pub ended_length: u64,
    /// An op that asked the run loop to look (MMIO, a store to code, the general executor).
    pub ended_event: u64,
    pub ended_trap: u64,
    /// Taken branches back into their own block that ran on there.
    pub loops_in_block: u64,
    /// TLB misses (page walks that filled an entry).
    pub tlb_fills: u64,
    /// AMOs and LR/SC executed.
    pub atomics: u64,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ended = self.ended_taken_branch
            + self.ended_jump
            + self.ended_indirect_jump
            + self.ended_system
            + self.ended_page
            + self.ended_length
            + self.ended_event
            + self.ended_trap;
        let pct = |n: u64| 100.0 * n as f64 / ended.max(1) as f64;
        writeln!(
            f,
            "cpu stats: {} blocks run ({} decoded), {} single steps, {} loops kept in a block",
            self.blocks_run, self.blocks_decoded, self.single_steps, self.loops_in_block
        )?;
        writeln!(
            f,
            "  block ends: taken branch {:.1} %, direct jump {:.1} %, indirect jump {:.1} %, \
             system {:.1} %, page end {:.1} %, length {:.1} %, event {:.1} %, trap {:.1} %",
            pct(self.ended_taken_branch),
            pct(self.ended_jump),
            pct(self.ended_indirect_jump),
            pct(self.ended_system),
            pct(self.ended_page),
            pct(self.ended_length),
            pct(self.ended_event),
            pct(self.ended_trap)
        )?;
        write!(
            f,
            "  TLB fills {}, atomics {}",
            self.tlb_fills, self.atomics
        )
    }
}
