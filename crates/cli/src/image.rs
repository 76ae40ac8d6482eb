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

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Fetch Debian's riscv64 kernel, busybox and OpenSBI and build the initramfs (cached).
    Fetch {
        /// Fetch and rebuild even if the cache is complete.
        #[arg(long)]
        force: bool,
    },
    /// Print the cached default guest's files.
    Info,
}

pub fn command(cmd: ImageCommand) -> Result<()> {
    let guest = match cmd {
        ImageCommand::Fetch { force } => default_guest(force)?,
        ImageCommand::Info => default_guest(false)?,
    };
    println!("kernel version  {}", guest.kernel_version);
    println!("kernel          {}", guest.kernel.display());
    println!("initrd          {}", guest.initrd.display());
    println!("firmware        {}", guest.firmware.display());
    Ok(())
}
