//! Building the guest kernel command line: the default microVM options, the user's options,
//! and one `virtio_mmio.device=` entry per virtio-mmio device.

/// The default command line (serial console, reboot through the keyboard controller, no PCI).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off nomodules \
8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.dumbkbd";

/// A virtio-mmio device as the kernel's `virtio_mmio.device=` parameter describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDeviceParam {
    /// Base address of the 4 KiB window.
    pub base: u64,
    /// Window size in bytes.
    pub size: u64,
    /// Interrupt line (GSI).
    pub irq: u32,
}

impl MmioDeviceParam {
    /// `virtio_mmio.device=<size>@<base>:<irq>`.
    pub fn to_param(&self) -> String {
        let size = if self.size.is_multiple_of(1 << 20) {
            format!("{}M", self.size >> 20)
        } else if self.size.is_multiple_of(1 << 10) {
            format!("{}K", self.size >> 10)
        } else {
            self.size.to_string()
        };
        format!("virtio_mmio.device={size}@{:#x}:{}", self.base, self.irq)
    }
}

/// The full command line: `base` (or [`DEFAULT_CMDLINE`]), then the device entries. Options
/// after a `--` separator (arguments for init) stay at the end.
pub fn build_cmdline(base: Option<&str>, devices: &[MmioDeviceParam]) -> String {
    let base = base.unwrap_or(DEFAULT_CMDLINE).trim();
    let (kernel_part, init_part) = match base.find(" -- ") {
        Some(i) => (&base[..i], Some(&base[i + 4..])),
        None if base.starts_with("-- ") => ("", Some(&base[3..])),
        None => (base, None),
    };
    let mut parts: Vec<String> = Vec::new();
    if !kernel_part.trim().is_empty() {
        parts.push(kernel_part.trim().to_string());
    }
    parts.extend(devices.iter().map(MmioDeviceParam::to_param));
    if let Some(init) = init_part {
        parts.push("--".to_string());
        parts.push(init.trim().to_string());
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_with_devices() {
        let d = [
            MmioDeviceParam {
                base: 0xd000_0000,
                size: 0x1000,
                irq: 5,
            },
            MmioDeviceParam {
                base: 0xd000_1000,
                size: 0x1000,
                irq: 6,
            },
        ];
        let c = build_cmdline(None, &d);
        assert!(c.starts_with("console=ttyS0 reboot=k panic=1 pci=off"));
        assert!(c.ends_with(
            "i8042.dumbkbd virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        ));
    }

    #[test]
    fn user_cmdline_replaces_default_and_keeps_init_args_last() {
        let d = [MmioDeviceParam {
            base: 0xd000_0000,
            size: 0x1000,
            irq: 5,
        }];
        assert_eq!(
            build_cmdline(Some("console=ttyS0 quiet -- --verbose x"), &d),
            "console=ttyS0 quiet virtio_mmio.device=4K@0xd0000000:5 -- --verbose x"
        );
        assert_eq!(
            build_cmdline(Some("  root=/dev/vda  "), &[]),
            "root=/dev/vda"
        );
        assert_eq!(
            build_cmdline(Some("-- a"), &d),
            "virtio_mmio.device=4K@0xd0000000:5 -- a"
        );
    }

    #[test]
    fn sizes() {
        let p = |size| {
            MmioDeviceParam {
                base: 0x1000,
                size,
                irq: 7,
            }
            .to_param()
        };
        assert_eq!(p(0x1000), "virtio_mmio.device=4K@0x1000:7");
        assert_eq!(p(2 << 20), "virtio_mmio.device=2M@0x1000:7");
        assert_eq!(p(100), "virtio_mmio.device=100@0x1000:7");
    }
}
