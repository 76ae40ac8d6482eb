//! The `ftvm` command.

fn main() -> anyhow::Result<()> {
    Ok(())
}
