//! `ftvm image`: the default guest in the cache.

use anyhow::{Context, Result};
use ftvm_image::{FetchOptions, GuestFiles};

/// The default guest, fetched and built on first use (with progress on stderr).
pub fn default_guest(force: bool) -> Result<GuestFiles> {
    let opts = FetchOptions {
        cache_dir: ftvm_image::cache_dir(),
        progress: true,
        force,
    };
    ftvm_image::ensure_default_guest(&opts).context("could not prepare the default guest image")
}

/// The redis guest (the default guest plus its root disk), built on first use.
pub fn redis_guest(force: bool) -> Result<ftvm_image::RedisGuest> {
    let opts = FetchOptions {
        cache_dir: ftvm_image::cache_dir(),
        progress: true,
        force,
    };
    ftvm_image::ensure_redis_guest(&opts).context("could not prepare the redis guest image")
}

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Fetch Debian's riscv64 kernel, busybox and OpenSBI and build the initramfs (cached).
    Fetch {
        /// Fetch and rebuild even if the cache is complete.
        #[arg(long)]
        force: bool,
        /// Also build the redis guest's root disk (ext4, redis from Debian's riscv64 packages).
        #[arg(long)]
        redis: bool,
    },
    /// Print the cached default guest's files.
    Info,
}

pub fn command(cmd: ImageCommand) -> Result<()> {
    let (guest, redis) = match cmd {
        ImageCommand::Fetch { force, redis } => {
            let guest = default_guest(force)?;
            (guest, redis.then(|| redis_guest(force)).transpose()?)
        }
        ImageCommand::Info => (default_guest(false)?, None),
    };
    println!("kernel version  {}", guest.kernel_version);
    println!("kernel          {}", guest.kernel.display());
    println!("initrd          {}", guest.initrd.display());
    println!("firmware        {}", guest.firmware.display());
    if let Some(r) = redis {
        println!("redis disk      {}", r.root_disk.display());
    }
    Ok(())
}
