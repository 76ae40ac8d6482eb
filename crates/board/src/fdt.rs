//! The device tree the firmware and kernel read, mirroring QEMU virt's layout.

use thiserror::Error;
use vm_fdt::FdtWriter;

use crate::memmap::*;

#[derive(Debug, Error)]
#[error("device tree: {0}")]
pub struct FdtError(String);

impl From<vm_fdt::Error> for FdtError {
    fn from(e: vm_fdt::Error) -> Self {
        FdtError(e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct FdtConfig {
    pub ram_base: u64,
    pub ram_size: u64,
    pub bootargs: String,
    /// (start, end) physical addresses.
    pub initrd: Option<(u64, u64)>,
    pub hartid: u32,
    pub timebase_hz: u64,
    /// e.g. "rv64imafdc_zicsr_zifencei_zicntr_zihpm".
    pub isa: String,
    /// virtio-mmio transports: (base, PLIC irq).
    pub virtio: Vec<(u64, u32)>,
}

const PH_CPU_INTC: u32 = 1;
const PH_PLIC: u32 = 2;
const PH_TEST: u32 = 3;

fn reg(base: u64, size: u64) -> [u64; 2] {
    [base, size]
}

pub fn build(cfg: &FdtConfig) -> Result<Vec<u8>, FdtError> {
    let mut f = FdtWriter::new()?;
    let root = f.begin_node("")?;
    f.property_u32("#address-cells", 2)?;
    f.property_u32("#size-cells", 2)?;
    f.property_string("compatible", "riscv-virtio")?;
    f.property_string("model", "ftvm,virt")?;

    let chosen = f.begin_node("chosen")?;
    f.property_string("bootargs", &cfg.bootargs)?;
    f.property_string("stdout-path", &format!("/soc/serial@{UART0_BASE:x}"))?;
    if let Some((start, end)) = cfg.initrd {
        f.property_u64("linux,initrd-start", start)?;
        f.property_u64("linux,initrd-end", end)?;
    }
    f.end_node(chosen)?;

    let mem = f.begin_node(&format!("memory@{:x}", cfg.ram_base))?;
    f.property_string("device_type", "memory")?;
    f.property_array_u64("reg", &reg(cfg.ram_base, cfg.ram_size))?;
    f.end_node(mem)?;

    let cpus = f.begin_node("cpus")?;
    f.property_u32("#address-cells", 1)?;
    f.property_u32("#size-cells", 0)?;
    f.property_u32("timebase-frequency", cfg.timebase_hz as u32)?;
    let cpu = f.begin_node(&format!("cpu@{}", cfg.hartid))?;
    f.property_string("device_type", "cpu")?;
    f.property_u32("reg", cfg.hartid)?;
    f.property_string("status", "okay")?;
    f.property_string("compatible", "riscv")?;
    f.property_string("riscv,isa", &cfg.isa)?;
    f.property_string("riscv,isa-base", "rv64i")?;
    let mut exts: Vec<String> = cfg
        .isa
        .trim_start_matches("rv64")
        .split('_')
        .enumerate()
        .flat_map(|(i, part)| {
            if i == 0 {
                part.chars().map(|c| c.to_string()).collect::<Vec<_>>()
            } else {
                vec![part.to_string()]
            }
        })
        .collect();
    exts.retain(|e| !e.is_empty());
    f.property_string_list("riscv,isa-extensions", exts)?;
    f.property_string("mmu-type", "riscv,sv48")?;
    let intc = f.begin_node("interrupt-controller")?;
    f.property_u32("#interrupt-cells", 1)?;
    f.property_null("interrupt-controller")?;
    f.property_string("compatible", "riscv,cpu-intc")?;
    f.property_phandle(PH_CPU_INTC)?;
    f.end_node(intc)?;
    f.end_node(cpu)?;
    f.end_node(cpus)?;

    let soc = f.begin_node("soc")?;
    f.property_u32("#address-cells", 2)?;
    f.property_u32("#size-cells", 2)?;
    f.property_string("compatible", "simple-bus")?;
    f.property_null("ranges")?;

    let test = f.begin_node(&format!("test@{TEST_BASE:x}"))?;
    f.property_string_list(
        "compatible",
        vec![
            "sifive,test1".into(),
            "sifive,test0".into(),
            "syscon".into(),
        ],
    )?;
    f.property_array_u64("reg", &reg(TEST_BASE, TEST_SIZE))?;
    f.property_phandle(PH_TEST)?;
    f.end_node(test)?;
    for (name, compat, value) in [
        ("poweroff", "syscon-poweroff", 0x5555u32),
        ("reboot", "syscon-reboot", 0x7777),
    ] {
        let n = f.begin_node(name)?;
        f.property_string("compatible", compat)?;
        f.property_u32("regmap", PH_TEST)?;
        f.property_u32("offset", 0)?;
        f.property_u32("value", value)?;
        f.end_node(n)?;
    }

    let clint = f.begin_node(&format!("clint@{CLINT_BASE:x}"))?;
    f.property_string_list(
        "compatible",
        vec!["sifive,clint0".into(), "riscv,clint0".into()],
    )?;
    f.property_array_u64("reg", &reg(CLINT_BASE, CLINT_SIZE))?;
    f.property_array_u32("interrupts-extended", &[PH_CPU_INTC, 3, PH_CPU_INTC, 7])?;
    f.end_node(clint)?;

    let plic = f.begin_node(&format!("plic@{PLIC_BASE:x}"))?;
    f.property_string_list(
        "compatible",
        vec!["sifive,plic-1.0.0".into(), "riscv,plic0".into()],
    )?;
    f.property_array_u64("reg", &reg(PLIC_BASE, PLIC_SIZE))?;
    f.property_u32("#address-cells", 0)?;
    f.property_u32("#interrupt-cells", 1)?;
    f.property_null("interrupt-controller")?;
    f.property_u32("riscv,ndev", PLIC_SOURCES - 1)?;
    f.property_array_u32("interrupts-extended", &[PH_CPU_INTC, 11, PH_CPU_INTC, 9])?;
    f.property_phandle(PH_PLIC)?;
    f.end_node(plic)?;

    let uart = f.begin_node(&format!("serial@{UART0_BASE:x}"))?;
    f.property_string("compatible", "ns16550a")?;
    f.property_array_u64("reg", &reg(UART0_BASE, UART0_SIZE))?;
    f.property_u32("clock-frequency", 3_686_400)?;
    f.property_u32("interrupts", UART0_IRQ)?;
    f.property_u32("interrupt-parent", PH_PLIC)?;
    f.end_node(uart)?;

    for &(base, irq) in &cfg.virtio {
        let v = f.begin_node(&format!("virtio_mmio@{base:x}"))?;
        f.property_string("compatible", "virtio,mmio")?;
        f.property_array_u64("reg", &reg(base, VIRTIO_STRIDE))?;
        f.property_u32("interrupts", irq)?;
        f.property_u32("interrupt-parent", PH_PLIC)?;
        f.end_node(v)?;
    }
    f.end_node(soc)?;
    f.end_node(root)?;
    Ok(f.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_back() {
        let blob = build(&FdtConfig {
            ram_base: RAM_BASE,
            ram_size: 256 << 20,
            bootargs: "console=ttyS0".into(),
            initrd: Some((0x8800_0000, 0x8810_0000)),
            hartid: 0,
            timebase_hz: 10_000_000,
            isa: "rv64imafdc_zicsr_zifencei".into(),
            virtio: vec![(VIRTIO_BASE, 1)],
        })
        .unwrap();
        let t = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(t.chosen().bootargs(), Some("console=ttyS0"));
        let mem = t.memory().regions().next().unwrap();
        assert_eq!(mem.starting_address as u64, RAM_BASE);
        assert_eq!(mem.size, Some(256 << 20));
        let cpu = t.find_node("/cpus/cpu@0").unwrap();
        assert_eq!(
            cpu.property("riscv,isa").unwrap().as_str(),
            Some("rv64imafdc_zicsr_zifencei")
        );
        let exts = cpu.property("riscv,isa-extensions").unwrap().value;
        assert!(exts.starts_with(b"i\0m\0a\0f\0d\0c\0zicsr\0zifencei\0"));
        assert!(t.find_node("/soc/serial@10000000").is_some());
        assert!(t.find_node("/soc/virtio_mmio@10001000").is_some());
        assert!(t.find_compatible(&["syscon-poweroff"]).is_some());
    }
}
