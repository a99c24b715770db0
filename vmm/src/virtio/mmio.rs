//! The virtio-mmio transport (spec §4.2): the 4 KiB register window of one device, with the
//! driver-status state machine of spec §2.1 / §3.1.1 and the queue configuration registers.
//!
//! The transport knows no specific device; it talks to a [`VirtioDevice`] and activates it once
//! the driver sets `DRIVER_OK` with a consistent configuration.

use log::{debug, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::interrupt::Interrupt;
use super::{status, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};

/// "virt" in little endian (spec §4.2.2, MagicValue).
pub const MMIO_MAGIC_VALUE: u32 = 0x7472_6976;
/// The non-legacy virtio-mmio version (spec §4.2.2, Version).
pub const MMIO_VERSION: u32 = 2;
/// Vendor ID reported to the driver (spec §4.2.2, VendorID; any value is allowed).
pub const MMIO_VENDOR_ID: u32 = 0;
/// ConfigGeneration value (spec §2.5.1): the device configuration spaces here are static.
const CONFIG_GENERATION: u32 = 0;
/// Size of one device's MMIO window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// Register offsets of the virtio-mmio layout (spec §4.2.2, table "MMIO Device Register Layout").
pub mod regs {
    /// MagicValue (R).
    pub const MAGIC_VALUE: u64 = 0x000;
    /// Version (R).
    pub const VERSION: u64 = 0x004;
    /// DeviceID (R).
    pub const DEVICE_ID: u64 = 0x008;
    /// VendorID (R).
    pub const VENDOR_ID: u64 = 0x00c;
    /// DeviceFeatures (R): 32 feature bits selected by DeviceFeaturesSel.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// DeviceFeaturesSel (W).
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// DriverFeatures (W): 32 feature bits selected by DriverFeaturesSel.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// DriverFeaturesSel (W).
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// QueueSel (W).
    pub const QUEUE_SEL: u64 = 0x030;
    /// QueueNumMax (R).
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// QueueNum (W).
    pub const QUEUE_NUM: u64 = 0x038;
    /// QueueReady (RW).
    pub const QUEUE_READY: u64 = 0x044;
    /// QueueNotify (W).
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// InterruptStatus (R).
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// InterruptACK (W).
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Status (RW).
    pub const STATUS: u64 = 0x070;
    /// QueueDescLow (W).
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// QueueDescHigh (W).
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// QueueDriverLow (W): the available ring.
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    /// QueueDriverHigh (W).
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    /// QueueDeviceLow (W): the used ring.
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    /// QueueDeviceHigh (W).
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    /// SHMSel (W).
    pub const SHM_SEL: u64 = 0x0ac;
    /// SHMLenLow (R).
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// SHMLenHigh (R).
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// SHMBaseLow (R).
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    /// SHMBaseHigh (R).
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    /// ConfigGeneration (R).
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device-specific configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// Errors raised while building the transport.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// The device declared a queue that virtio-queue refuses (size 0 or not a power of two).
    #[error("invalid virtqueue {index}: {source}")]
    Queue {
        index: usize,
        #[source]
        source: virtio_queue::Error,
    },
    /// Creating or cloning a queue eventfd failed.
    #[error("failed to create a queue eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// The device declared no queue at all.
    #[error("device declares no virtqueue")]
    NoQueues,
}

/// One virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Interrupt,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    device_status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    unknown_features_requested: bool,
    queue_sel: u32,
    /// Per queue: the driver wrote a size that is not valid for it.
    bad_queue_size: Vec<bool>,
}

impl MmioTransport {
    /// Wraps `device`; `irq_evt` is written whenever the device raises its interrupt (the VMM
    /// registers it as a KVM irqfd).
    pub fn new(
        mem: GuestMemoryMmap,
        device: Box<dyn VirtioDevice>,
        irq_evt: EventFd,
    ) -> Result<Self, MmioError> {
        let sizes = device.queue_max_sizes().to_vec();
        if sizes.is_empty() {
            return Err(MmioError::NoQueues);
        }
        let queues = new_queues(&sizes)?;
        let queue_evts = sizes
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK).map_err(MmioError::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            mem,
            interrupt: Interrupt::new(irq_evt),
            queues,
            queue_evts,
            device_status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            unknown_features_requested: false,
            queue_sel: 0,
            bad_queue_size: vec![false; sizes.len()],
        })
    }

    /// The wrapped device.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// The eventfds signalled by QueueNotify writes, one per queue (the VMM may register them as
    /// KVM ioeventfds on the QueueNotify address with the queue index as datamatch).
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The interrupt handle (shared with the device once activated).
    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    /// One line for the state dump: the device status, the interrupt status the driver has not
    /// acknowledged yet, and for each ready queue the driver's available index and the device's
    /// used index as they are in guest memory (spec §2.7.6, §2.7.8). On an idle VM a request
    /// queue has both equal; `avail > used` there means requests the device has not finished,
    /// and an interrupt status that stays set means the driver did not take an interrupt.
    pub fn state_summary(&self) -> String {
        use vm_memory::{Bytes, GuestAddress};
        let idx = |ring: u64| {
            ring.checked_add(2)
                .and_then(|a| self.mem.read_obj::<u16>(GuestAddress(a)).ok())
                .map_or_else(|| "?".to_string(), |v| u16::from_le(v).to_string())
        };
        let queues: Vec<String> = self
            .queues
            .iter()
            .enumerate()
            .filter(|(_, q)| q.ready())
            .map(|(i, q)| {
                format!(
                    "q{i}:avail={},used={}",
                    idx(q.avail_ring()),
                    idx(q.used_ring())
                )
            })
            .collect();
        format!(
            "type={} status={:#x} isr={:#x} {}",
            self.device.device_type(),
            self.device_status,
            self.interrupt.status(),
            queues.join(" ")
        )
    }

    /// Current value of the device status register (spec §2.1).
    pub fn device_status(&self) -> u32 {
        self.device_status
    }

    /// Handles a guest read at `offset` within the 4 KiB window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= regs::CONFIG {
            // Spec §4.2.2.2: the config space may be accessed with any naturally aligned width.
            self.device.read_config(offset - regs::CONFIG, data);
            return;
        }
        // Spec §4.2.2.2: the driver MUST only use 32-bit wide, aligned accesses for registers.
        if data.len() != 4 || !offset.is_multiple_of(4) {
            warn!(
                "virtio-mmio: bad register read at {offset:#x}, width {}",
                data.len()
            );
            data.fill(0);
            return;
        }
        let value = self.read_register(offset);
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// Handles a guest write at `offset` within the 4 KiB window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= regs::CONFIG {
            self.write_config(offset - regs::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            warn!(
                "virtio-mmio: bad register write at {offset:#x}, width {}",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            warn!("virtio-mmio: unaligned register write at {offset:#x}");
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }

    fn read_register(&self, offset: u64) -> u32 {
        match offset {
            regs::MAGIC_VALUE => MMIO_MAGIC_VALUE,
            regs::VERSION => MMIO_VERSION,
            regs::DEVICE_ID => self.device.device_type(),
            regs::VENDOR_ID => MMIO_VENDOR_ID,
            regs::DEVICE_FEATURES => {
                feature_word(self.device.avail_features(), self.device_features_sel)
            }
            // Spec §4.2.2: reading QueueNumMax returns 0 for a queue that is not available.
            regs::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            regs::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            regs::INTERRUPT_STATUS => self.interrupt.status(),
            regs::STATUS => self.device_status,
            // Spec §4.2.2: a non-existent shared memory region reads as length -1.
            regs::SHM_LEN_LOW | regs::SHM_LEN_HIGH | regs::SHM_BASE_LOW | regs::SHM_BASE_HIGH => {
                u32::MAX
            }
            // The devices here have a configuration space that never changes while the driver
            // runs (spec §2.5.1), so the generation stays the same.
            regs::CONFIG_GENERATION => CONFIG_GENERATION,
            _ => {
                debug!("virtio-mmio: read of write-only or unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            regs::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            regs::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            regs::DRIVER_FEATURES => self.write_driver_features(value),
            regs::QUEUE_SEL => self.queue_sel = value,
            regs::QUEUE_NUM => self.write_queue_num(value),
            regs::QUEUE_READY => self.update_queue(offset, |q| q.set_ready(value == 1)),
            regs::QUEUE_DESC_LOW => {
                self.update_queue(offset, |q| q.set_desc_table_address(Some(value), None))
            }
            regs::QUEUE_DESC_HIGH => {
                self.update_queue(offset, |q| q.set_desc_table_address(None, Some(value)))
            }
            regs::QUEUE_DRIVER_LOW => {
                self.update_queue(offset, |q| q.set_avail_ring_address(Some(value), None))
            }
            regs::QUEUE_DRIVER_HIGH => {
                self.update_queue(offset, |q| q.set_avail_ring_address(None, Some(value)))
            }
            regs::QUEUE_DEVICE_LOW => {
                self.update_queue(offset, |q| q.set_used_ring_address(Some(value), None))
            }
            regs::QUEUE_DEVICE_HIGH => {
                self.update_queue(offset, |q| q.set_used_ring_address(None, Some(value)))
            }
            regs::QUEUE_NOTIFY => self.notify_queue(value),
            regs::INTERRUPT_ACK => self.interrupt.ack(value),
            regs::STATUS => self.write_status(value),
            regs::SHM_SEL => {}
            _ => warn!("virtio-mmio: write of read-only or unknown register {offset:#x}"),
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Spec §3.1.1: the config space is set up by the driver after FEATURES_OK; writes before
        // negotiation are refused.
        if self.device_status & status::FEATURES_OK == 0 || self.device_status & status::FAILED != 0
        {
            warn!("virtio-mmio: config write at {offset:#x} before FEATURES_OK refused");
            return;
        }
        self.device.write_config(offset, data);
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    fn write_driver_features(&mut self, value: u32) {
        // Spec §3.1.1 step 4: features are written after DRIVER and before FEATURES_OK.
        if self.device_status != status::ACKNOWLEDGE | status::DRIVER {
            warn!(
                "virtio-mmio: driver features written in status {:#x}, refused",
                self.device_status
            );
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
            1 => {
                self.driver_features =
                    (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
            }
            // Spec §4.2.2: feature words past those the device has are ignored, but a driver
            // setting bits there asks for something nobody offered.
            _ if value != 0 => {
                warn!(
                    "virtio-mmio: driver set unknown feature word {}",
                    self.driver_features_sel
                );
                self.unknown_features_requested = true;
            }
            _ => {}
        }
    }

    /// Applies a queue configuration write; spec §3.1.1 step 7 and §4.2.3.2: virtqueues are
    /// configured after FEATURES_OK and before DRIVER_OK.
    fn update_queue<F: FnOnce(&mut Queue)>(&mut self, offset: u64, f: F) {
        let configurable = self.device_status & status::FEATURES_OK != 0
            && self.device_status
                & (status::DRIVER_OK | status::FAILED | status::DEVICE_NEEDS_RESET)
                == 0;
        if !configurable {
            warn!(
                "virtio-mmio: queue register {offset:#x} written in status {:#x}, refused",
                self.device_status
            );
            return;
        }
        let sel = self.queue_sel as usize;
        match self.queues.get_mut(sel) {
            Some(q) => f(q),
            None => warn!("virtio-mmio: queue register {offset:#x} for missing queue {sel}"),
        }
    }

    /// QueueNum (spec §4.2.2, §2.7: a power of two up to QueueNumMax). A bad size is remembered
    /// so that enabling the queue fails at DRIVER_OK instead of the device silently using
    /// another size than the driver.
    fn write_queue_num(&mut self, value: u32) {
        let sel = self.queue_sel as usize;
        let Some(max) = self.queues.get(sel).map(|q| q.max_size()) else {
            warn!("virtio-mmio: queue size written for missing queue {sel}");
            return;
        };
        let size = u16::try_from(value)
            .ok()
            .filter(|s| s.is_power_of_two() && *s <= max);
        let mut accepted = false;
        self.update_queue(regs::QUEUE_NUM, |q| {
            accepted = true;
            if let Some(size) = size {
                q.set_size(size);
            }
        });
        if !accepted {
            return;
        }
        if size.is_none() {
            warn!("virtio-mmio: invalid size {value} for queue {sel}");
        }
        if let Some(bad) = self.bad_queue_size.get_mut(sel) {
            *bad = size.is_none();
        }
    }

    fn notify_queue(&mut self, index: u32) {
        // Spec §4.2.3.3: notifications are meaningful only once the device is live.
        if self.device_status & status::DRIVER_OK == 0 {
            warn!("virtio-mmio: queue {index} notified before DRIVER_OK, ignored");
            return;
        }
        match self.queue_evts.get(index as usize) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    warn!("virtio-mmio: failed to signal queue {index}: {e}");
                }
            }
            None => warn!("virtio-mmio: notify for missing queue {index}"),
        }
    }

    /// The device-status state machine (spec §2.1, §3.1.1). Each write must add exactly the next
    /// bit of the initialization sequence; writing 0 resets the device (spec §2.4, §4.2.3.1);
    /// FAILED may be set at any time.
    fn write_status(&mut self, value: u32) {
        use status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FAILED, FEATURES_OK};
        if value == 0 {
            self.reset();
            return;
        }
        if value & FAILED != 0 {
            // Spec §2.1: the driver gave up; nothing more happens until a reset.
            warn!("virtio-mmio: driver set FAILED (status {value:#x})");
            self.device_status |= FAILED;
            return;
        }
        if self.device_status & FAILED != 0 {
            warn!("virtio-mmio: status write {value:#x} after FAILED ignored");
            return;
        }
        let current = self.device_status;
        if value == current {
            // Linux re-writes bits it already set (virtio_add_status): nothing changes.
            return;
        }
        match (current, value) {
            (0, ACKNOWLEDGE) => self.device_status = value,
            (ACKNOWLEDGE, v) if v == ACKNOWLEDGE | DRIVER => self.device_status = value,
            (c, v) if c == ACKNOWLEDGE | DRIVER && v == c | FEATURES_OK => {
                self.negotiate_features();
            }
            (c, v) if c == ACKNOWLEDGE | DRIVER | FEATURES_OK && v == c | DRIVER_OK => {
                self.device_status = value;
                self.activate();
            }
            _ => warn!("virtio-mmio: status transition {current:#x} -> {value:#x} refused"),
        }
    }

    /// Spec §2.2.2 / §3.1.1 step 5-6: FEATURES_OK is only kept if the driver accepted a subset
    /// of the offered features including VIRTIO_F_VERSION_1 (spec §6.1: a modern device may
    /// refuse a driver that does not accept it). Otherwise the bit stays clear and the driver
    /// sees negotiation failed when it reads the status back.
    fn negotiate_features(&mut self) {
        let offered = self.device.avail_features();
        let wanted = self.driver_features;
        if self.unknown_features_requested {
            warn!("virtio-mmio: driver accepted feature bits past bit 63");
            return;
        }
        if wanted & !offered != 0 {
            warn!(
                "virtio-mmio: driver accepted features {:#x} that were not offered",
                wanted & !offered
            );
            return;
        }
        if wanted & (1 << VIRTIO_F_VERSION_1) == 0 {
            warn!("virtio-mmio: driver did not accept VIRTIO_F_VERSION_1");
            return;
        }
        self.device.ack_features(wanted);
        self.device_status |= status::FEATURES_OK;
    }

    /// Spec §3.1.1 step 8: DRIVER_OK makes the device live. Every queue the driver enabled must
    /// be valid in guest memory; on any failure the device reports DEVICE_NEEDS_RESET and a
    /// configuration change (spec §2.1.2).
    fn activate(&mut self) {
        let event_idx = self.driver_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        for (i, q) in self.queues.iter_mut().enumerate() {
            let bad_size = self.bad_queue_size.get(i).copied().unwrap_or(false);
            if q.ready() && (bad_size || !q.is_valid(&self.mem)) {
                warn!("virtio-mmio: queue {i} enabled with an invalid layout");
                self.needs_reset();
                return;
            }
            q.set_event_idx(event_idx);
        }
        let evts = match self
            .queue_evts
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(evts) => evts,
            Err(e) => {
                warn!("virtio-mmio: failed to clone queue eventfds: {e}");
                self.needs_reset();
                return;
            }
        };
        // The device gets its own copies; the transport keeps the register view.
        let queues = match self
            .queues
            .iter()
            .map(|q| Queue::try_from(q.state()))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(queues) => queues,
            Err(e) => {
                warn!("virtio-mmio: invalid queue configuration: {e}");
                self.needs_reset();
                return;
            }
        };
        if let Err(e) = self
            .device
            .activate(self.mem.clone(), self.interrupt.clone(), queues, evts)
        {
            warn!("virtio-mmio: device activation failed: {e}");
            self.needs_reset();
        }
    }

    fn needs_reset(&mut self) {
        self.device_status |= status::DEVICE_NEEDS_RESET;
        if let Err(e) = self.interrupt.signal_config_change() {
            warn!("virtio-mmio: {e}");
        }
    }

    /// Spec §2.4 / §4.2.3.1: writing 0 to Status resets the device and the transport state.
    fn reset(&mut self) {
        if self.device.is_activated() {
            self.device.reset();
        }
        for (q, evt) in self.queues.iter_mut().zip(&self.queue_evts) {
            q.reset();
            // Drop notifications that were pending when the device stopped.
            let _ = evt.read();
        }
        self.interrupt.clear();
        self.device_status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.unknown_features_requested = false;
        self.queue_sel = 0;
        self.bad_queue_size.fill(false);
    }
}

fn new_queues(sizes: &[u16]) -> Result<Vec<Queue>, MmioError> {
    sizes
        .iter()
        .enumerate()
        .map(|(index, &size)| Queue::new(size).map_err(|source| MmioError::Queue { index, source }))
        .collect()
}

fn feature_word(features: u64, sel: u32) -> u32 {
    match sel {
        0 => features as u32,
        1 => (features >> 32) as u32,
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
