//! Tests of the virtio-mmio transport against a recording mock device and mock guest memory.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::virtio::interrupt::{INT_CONFIG_CHANGE, INT_USED_BUFFER};
use crate::virtio::{status, ActivateError, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};

const DEVICE_TYPE: u32 = 42;
const FEATURE_X: u32 = 3;
const CONFIG: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

#[derive(Default)]
struct Record {
    acked: u64,
    activations: usize,
    resets: usize,
    queues: Vec<Queue>,
    evts: Vec<EventFd>,
    interrupt: Option<Interrupt>,
    config_writes: Vec<(u64, Vec<u8>)>,
    fail_activation: bool,
}

struct MockDevice {
    rec: Arc<Mutex<Record>>,
    active: bool,
}

impl VirtioDevice for MockDevice {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 32]
    }
    fn avail_features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << FEATURE_X)
    }
    fn acked_features(&self) -> u64 {
        self.rec.lock().unwrap().acked
    }
    fn ack_features(&mut self, features: u64) {
        self.rec.lock().unwrap().acked = features;
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::virtio::read_config_bytes(&CONFIG, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.rec
            .lock()
            .unwrap()
            .config_writes
            .push((offset, data.to_vec()));
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        interrupt: Interrupt,
        queues: Vec<Queue>,
        queue_evts: Vec<EventFd>,
    ) -> Result<(), ActivateError> {
        let mut rec = self.rec.lock().unwrap();
        if rec.fail_activation {
            return Err(ActivateError::Backend("mock failure".into()));
        }
        rec.activations += 1;
        rec.queues = queues;
        rec.evts = queue_evts;
        rec.interrupt = Some(interrupt);
        self.active = true;
        Ok(())
    }
    fn reset(&mut self) {
        let mut rec = self.rec.lock().unwrap();
        rec.resets += 1;
        rec.queues.clear();
        rec.evts.clear();
        rec.interrupt = None;
        self.active = false;
    }
    fn is_activated(&self) -> bool {
        self.active
    }
}

struct Fixture {
    t: MmioTransport,
    rec: Arc<Mutex<Record>>,
    irq: EventFd,
    mem: GuestMemoryMmap,
}

fn fixture() -> Fixture {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let rec = Arc::new(Mutex::new(Record::default()));
    let dev = MockDevice {
        rec: rec.clone(),
        active: false,
    };
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let t = MmioTransport::new(mem.clone(), Box::new(dev), irq.try_clone().unwrap()).unwrap();
    Fixture { t, rec, irq, mem }
}

fn rd(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn set_features(t: &mut MmioTransport, features: u64) {
    wr(t, regs::DRIVER_FEATURES_SEL, 0);
    wr(t, regs::DRIVER_FEATURES, features as u32);
    wr(t, regs::DRIVER_FEATURES_SEL, 1);
    wr(t, regs::DRIVER_FEATURES, (features >> 32) as u32);
}

fn setup_queue(t: &mut MmioTransport, idx: u32, size: u32, base: u64) {
    wr(t, regs::QUEUE_SEL, idx);
    wr(t, regs::QUEUE_NUM, size);
    wr(t, regs::QUEUE_DESC_LOW, base as u32);
    wr(t, regs::QUEUE_DESC_HIGH, (base >> 32) as u32);
    wr(t, regs::QUEUE_DRIVER_LOW, (base + 0x1000) as u32);
    wr(t, regs::QUEUE_DRIVER_HIGH, 0);
    wr(t, regs::QUEUE_DEVICE_LOW, (base + 0x2000) as u32);
    wr(t, regs::QUEUE_DEVICE_HIGH, 0);
    wr(t, regs::QUEUE_READY, 1);
}

/// The Linux driver's sequence (spec §3.1.1) up to FEATURES_OK.
fn negotiate(t: &mut MmioTransport, features: u64) {
    wr(t, regs::STATUS, 0);
    wr(t, regs::STATUS, status::ACKNOWLEDGE);
    wr(t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    set_features(t, features);
    wr(
        t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
}

const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

fn full_init(t: &mut MmioTransport) {
    negotiate(t, 1 << VIRTIO_F_VERSION_1);
    assert_ne!(rd(t, regs::STATUS) & status::FEATURES_OK, 0);
    setup_queue(t, 0, 16, 0x1_0000);
    setup_queue(t, 1, 32, 0x2_0000);
    wr(t, regs::STATUS, ALL_OK);
}

#[test]
fn identification_registers() {
    let mut f = fixture();
    let t = &mut f.t;
    assert_eq!(rd(t, regs::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(rd(t, regs::VERSION), 2);
    assert_eq!(rd(t, regs::DEVICE_ID), DEVICE_TYPE);
    assert_eq!(rd(t, regs::VENDOR_ID), MMIO_VENDOR_ID);
    wr(t, regs::DEVICE_FEATURES_SEL, 0);
    assert_eq!(rd(t, regs::DEVICE_FEATURES), 1 << FEATURE_X);
    wr(t, regs::DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd(t, regs::DEVICE_FEATURES), 1);
    wr(t, regs::DEVICE_FEATURES_SEL, 2);
    assert_eq!(rd(t, regs::DEVICE_FEATURES), 0);
    wr(t, regs::QUEUE_SEL, 0);
    assert_eq!(rd(t, regs::QUEUE_NUM_MAX), 16);
    wr(t, regs::QUEUE_SEL, 1);
    assert_eq!(rd(t, regs::QUEUE_NUM_MAX), 32);
    wr(t, regs::QUEUE_SEL, 2);
    assert_eq!(rd(t, regs::QUEUE_NUM_MAX), 0, "missing queue reads 0");
    assert_eq!(rd(t, regs::SHM_LEN_LOW), u32::MAX);
    assert_eq!(rd(t, regs::SHM_LEN_HIGH), u32::MAX);
    assert_eq!(rd(t, regs::CONFIG_GENERATION), 0);
    // Write-only registers read as zero.
    assert_eq!(rd(t, regs::QUEUE_NOTIFY), 0);
}

#[test]
fn good_init_sequence_activates_device() {
    let mut f = fixture();
    full_init(&mut f.t);
    assert_eq!(rd(&mut f.t, regs::STATUS), ALL_OK);
    let rec = f.rec.lock().unwrap();
    assert_eq!(rec.activations, 1);
    assert_eq!(rec.acked, 1 << VIRTIO_F_VERSION_1);
    assert_eq!(rec.queues.len(), 2);
    assert_eq!(rec.evts.len(), 2);
    let q1 = &rec.queues[1];
    assert!(q1.ready());
    assert_eq!(q1.size(), 32);
    assert_eq!(q1.desc_table(), 0x2_0000);
    assert_eq!(q1.avail_ring(), 0x2_1000);
    assert_eq!(q1.used_ring(), 0x2_2000);
    drop(rec);
    wr(&mut f.t, regs::QUEUE_SEL, 1);
    assert_eq!(rd(&mut f.t, regs::QUEUE_READY), 1);
}

#[test]
fn out_of_order_status_writes_are_refused() {
    let mut f = fixture();
    let t = &mut f.t;
    // DRIVER before ACKNOWLEDGE.
    wr(t, regs::STATUS, status::DRIVER);
    assert_eq!(rd(t, regs::STATUS), 0);
    wr(t, regs::STATUS, status::ACKNOWLEDGE);
    // FEATURES_OK without DRIVER.
    wr(t, regs::STATUS, status::ACKNOWLEDGE | status::FEATURES_OK);
    assert_eq!(rd(t, regs::STATUS), status::ACKNOWLEDGE);
    wr(t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    set_features(t, 1 << VIRTIO_F_VERSION_1);
    // DRIVER_OK before FEATURES_OK.
    wr(
        t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
    );
    assert_eq!(rd(t, regs::STATUS), status::ACKNOWLEDGE | status::DRIVER);
    // Queue configuration before FEATURES_OK is ignored.
    setup_queue(t, 0, 8, 0x1_0000);
    wr(t, regs::QUEUE_SEL, 0);
    assert_eq!(rd(t, regs::QUEUE_READY), 0);
    assert_eq!(f.rec.lock().unwrap().activations, 0);
}

#[test]
fn queue_and_feature_writes_after_their_phase_are_refused() {
    let mut f = fixture();
    full_init(&mut f.t);
    let t = &mut f.t;
    // Features can no longer change.
    set_features(t, (1 << VIRTIO_F_VERSION_1) | (1 << FEATURE_X));
    // Queues can no longer change after DRIVER_OK.
    wr(t, regs::QUEUE_SEL, 0);
    wr(t, regs::QUEUE_READY, 0);
    wr(t, regs::QUEUE_NUM, 4);
    wr(t, regs::QUEUE_DESC_LOW, 0x5000);
    assert_eq!(rd(t, regs::QUEUE_READY), 1);
    // A repeated DRIVER_OK does not activate twice.
    wr(t, regs::STATUS, ALL_OK);
    let rec = f.rec.lock().unwrap();
    assert_eq!(rec.activations, 1);
    assert_eq!(rec.acked, 1 << VIRTIO_F_VERSION_1);
    assert_eq!(rec.queues[0].size(), 16);
    assert_eq!(rec.queues[0].desc_table(), 0x1_0000);
}

#[test]
fn feature_negotiation() {
    let mut f = fixture();
    // Accepting both offered features works.
    negotiate(&mut f.t, (1 << VIRTIO_F_VERSION_1) | (1 << FEATURE_X));
    assert_ne!(rd(&mut f.t, regs::STATUS) & status::FEATURES_OK, 0);
    assert_eq!(
        f.rec.lock().unwrap().acked,
        (1 << VIRTIO_F_VERSION_1) | (1 << FEATURE_X)
    );

    // A feature that was not offered: FEATURES_OK stays clear.
    negotiate(&mut f.t, (1 << VIRTIO_F_VERSION_1) | (1 << 5));
    assert_eq!(rd(&mut f.t, regs::STATUS) & status::FEATURES_OK, 0);

    // A legacy driver without VIRTIO_F_VERSION_1 is refused.
    negotiate(&mut f.t, 1 << FEATURE_X);
    assert_eq!(rd(&mut f.t, regs::STATUS) & status::FEATURES_OK, 0);

    // Bits in a feature word past 63.
    wr(&mut f.t, regs::STATUS, 0);
    wr(&mut f.t, regs::STATUS, status::ACKNOWLEDGE);
    wr(&mut f.t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    set_features(&mut f.t, 1 << VIRTIO_F_VERSION_1);
    wr(&mut f.t, regs::DRIVER_FEATURES_SEL, 2);
    wr(&mut f.t, regs::DRIVER_FEATURES, 1);
    wr(
        &mut f.t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(rd(&mut f.t, regs::STATUS) & status::FEATURES_OK, 0);

    // After a failed negotiation the driver can still start over.
    negotiate(&mut f.t, 1 << VIRTIO_F_VERSION_1);
    assert_ne!(rd(&mut f.t, regs::STATUS) & status::FEATURES_OK, 0);
}

#[test]
fn invalid_queue_sets_needs_reset() {
    let mut f = fixture();
    negotiate(&mut f.t, 1 << VIRTIO_F_VERSION_1);
    // Descriptor table outside guest memory.
    setup_queue(&mut f.t, 0, 16, 0x4000_0000);
    wr(&mut f.t, regs::STATUS, ALL_OK);
    let st = rd(&mut f.t, regs::STATUS);
    assert_ne!(st & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(rd(&mut f.t, regs::INTERRUPT_STATUS), INT_CONFIG_CHANGE);
    assert_eq!(f.irq.read().unwrap(), 1);
    assert_eq!(f.rec.lock().unwrap().activations, 0);

    // Invalid queue sizes: not a power of two, above QueueNumMax, beyond 16 bits (which must not
    // be truncated to a valid one). Enabling such a queue fails at DRIVER_OK.
    for size in [12, 64, 0x1_0010, 0] {
        wr(&mut f.t, regs::STATUS, 0);
        negotiate(&mut f.t, 1 << VIRTIO_F_VERSION_1);
        setup_queue(&mut f.t, 0, size, 0x1_0000);
        setup_queue(&mut f.t, 1, 32, 0x2_0000);
        wr(&mut f.t, regs::STATUS, ALL_OK);
        let st = rd(&mut f.t, regs::STATUS);
        assert_ne!(
            st & status::DEVICE_NEEDS_RESET,
            0,
            "size {size:#x} accepted"
        );
        assert_eq!(f.rec.lock().unwrap().activations, 0);
    }
    // A bad size corrected by the driver before DRIVER_OK is fine.
    wr(&mut f.t, regs::STATUS, 0);
    negotiate(&mut f.t, 1 << VIRTIO_F_VERSION_1);
    setup_queue(&mut f.t, 0, 12, 0x1_0000);
    setup_queue(&mut f.t, 0, 8, 0x1_0000);
    setup_queue(&mut f.t, 1, 32, 0x2_0000);
    wr(&mut f.t, regs::STATUS, ALL_OK);
    assert_eq!(rd(&mut f.t, regs::STATUS), ALL_OK);
    assert_eq!(f.rec.lock().unwrap().queues[0].size(), 8);
}

#[test]
fn failed_activation_sets_needs_reset() {
    let mut f = fixture();
    f.rec.lock().unwrap().fail_activation = true;
    full_init(&mut f.t);
    assert_ne!(rd(&mut f.t, regs::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(rd(&mut f.t, regs::INTERRUPT_STATUS), INT_CONFIG_CHANGE);
}

#[test]
fn failed_status_blocks_until_reset() {
    let mut f = fixture();
    wr(&mut f.t, regs::STATUS, status::ACKNOWLEDGE);
    wr(&mut f.t, regs::STATUS, status::ACKNOWLEDGE | status::FAILED);
    assert_ne!(rd(&mut f.t, regs::STATUS) & status::FAILED, 0);
    wr(&mut f.t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    assert_ne!(rd(&mut f.t, regs::STATUS) & status::FAILED, 0);
    full_init(&mut f.t);
    assert_eq!(rd(&mut f.t, regs::STATUS), ALL_OK);
}

#[test]
fn interrupt_status_and_ack() {
    let mut f = fixture();
    full_init(&mut f.t);
    let irq = f.rec.lock().unwrap().interrupt.clone().unwrap();
    assert_eq!(rd(&mut f.t, regs::INTERRUPT_STATUS), 0);
    irq.signal_used_queue().unwrap();
    assert_eq!(rd(&mut f.t, regs::INTERRUPT_STATUS), INT_USED_BUFFER);
    assert_eq!(f.irq.read().unwrap(), 1);
    irq.signal_config_change().unwrap();
    assert_eq!(
        rd(&mut f.t, regs::INTERRUPT_STATUS),
        INT_USED_BUFFER | INT_CONFIG_CHANGE
    );
    wr(&mut f.t, regs::INTERRUPT_ACK, INT_USED_BUFFER);
    assert_eq!(rd(&mut f.t, regs::INTERRUPT_STATUS), INT_CONFIG_CHANGE);
    wr(&mut f.t, regs::INTERRUPT_ACK, INT_CONFIG_CHANGE);
    assert_eq!(rd(&mut f.t, regs::INTERRUPT_STATUS), 0);
}

#[test]
fn queue_notify_signals_eventfd() {
    let mut f = fixture();
    negotiate(&mut f.t, 1 << VIRTIO_F_VERSION_1);
    // Before DRIVER_OK notifications are dropped.
    wr(&mut f.t, regs::QUEUE_NOTIFY, 1);
    assert!(f.t.queue_evts()[1].read().is_err());
    setup_queue(&mut f.t, 0, 16, 0x1_0000);
    setup_queue(&mut f.t, 1, 32, 0x2_0000);
    wr(&mut f.t, regs::STATUS, ALL_OK);
    wr(&mut f.t, regs::QUEUE_NOTIFY, 1);
    // The device's copy of the eventfd sees it.
    let rec = f.rec.lock().unwrap();
    assert_eq!(rec.evts[1].read().unwrap(), 1);
    assert!(rec.evts[0].read().is_err());
    drop(rec);
    // A notification for a queue that does not exist is ignored.
    wr(&mut f.t, regs::QUEUE_NOTIFY, 7);
}

#[test]
fn config_space_access() {
    let mut f = fixture();
    let mut b8 = [0u8; 8];
    f.t.read(regs::CONFIG, &mut b8);
    assert_eq!(b8, CONFIG);
    let mut b4 = [0u8; 4];
    f.t.read(regs::CONFIG + 4, &mut b4);
    assert_eq!(b4, [5, 6, 7, 8]);
    let mut b2 = [0xffu8; 2];
    f.t.read(regs::CONFIG + 7, &mut b2);
    assert_eq!(b2, [8, 0], "past the end reads zero");
    f.t.read(regs::CONFIG + 0x100, &mut b4);
    assert_eq!(b4, [0; 4]);
    // Writes before FEATURES_OK are refused, after are passed on.
    f.t.write(regs::CONFIG, &[9]);
    assert!(f.rec.lock().unwrap().config_writes.is_empty());
    negotiate(&mut f.t, 1 << VIRTIO_F_VERSION_1);
    f.t.write(regs::CONFIG + 2, &[9, 9]);
    assert_eq!(f.rec.lock().unwrap().config_writes, vec![(2, vec![9, 9])]);
}

#[test]
fn bad_register_widths_are_ignored() {
    let mut f = fixture();
    let mut b2 = [0xffu8; 2];
    f.t.read(regs::MAGIC_VALUE, &mut b2);
    assert_eq!(b2, [0, 0]);
    let mut b4 = [0xffu8; 4];
    f.t.read(regs::MAGIC_VALUE + 1, &mut b4);
    assert_eq!(b4, [0; 4]);
    f.t.write(regs::STATUS, &[1]);
    assert_eq!(rd(&mut f.t, regs::STATUS), 0);
    f.t.write(regs::STATUS + 2, &1u32.to_le_bytes());
    assert_eq!(rd(&mut f.t, regs::STATUS), 0);
    // Writes to read-only registers change nothing.
    wr(&mut f.t, regs::MAGIC_VALUE, 0);
    assert_eq!(rd(&mut f.t, regs::MAGIC_VALUE), MMIO_MAGIC_VALUE);
}

#[test]
fn reset_stops_device_and_allows_reinit() {
    let mut f = fixture();
    full_init(&mut f.t);
    let irq = f.rec.lock().unwrap().interrupt.clone().unwrap();
    irq.signal_used_queue().unwrap();
    wr(&mut f.t, regs::QUEUE_SEL, 1);
    wr(&mut f.t, regs::STATUS, 0);
    assert_eq!(rd(&mut f.t, regs::STATUS), 0);
    assert_eq!(rd(&mut f.t, regs::INTERRUPT_STATUS), 0);
    {
        let rec = f.rec.lock().unwrap();
        assert_eq!(rec.resets, 1);
        assert!(rec.queues.is_empty());
    }
    // Queue state went back to its defaults.
    wr(&mut f.t, regs::QUEUE_SEL, 1);
    assert_eq!(rd(&mut f.t, regs::QUEUE_READY), 0);
    assert!(!f.t.device().is_activated());
    full_init(&mut f.t);
    let rec = f.rec.lock().unwrap();
    assert_eq!(rec.activations, 2);
    assert_eq!(rec.queues.len(), 2);
}

#[test]
fn transport_rejects_device_without_queues() {
    struct NoQueues;
    impl VirtioDevice for NoQueues {
        fn device_type(&self) -> u32 {
            1
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[]
        }
        fn avail_features(&self) -> u64 {
            0
        }
        fn acked_features(&self) -> u64 {
            0
        }
        fn ack_features(&mut self, _: u64) {}
        fn read_config(&self, _: u64, _: &mut [u8]) {}
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(
            &mut self,
            _: GuestMemoryMmap,
            _: Interrupt,
            _: Vec<Queue>,
            _: Vec<EventFd>,
        ) -> Result<(), ActivateError> {
            Ok(())
        }
        fn reset(&mut self) {}
        fn is_activated(&self) -> bool {
            false
        }
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    assert!(matches!(
        MmioTransport::new(mem, Box::new(NoQueues), irq),
        Err(MmioError::NoQueues)
    ));
}

#[test]
fn state_summary_reads_the_rings_indices_and_the_interrupt_status() {
    use vm_memory::Bytes;
    let Fixture {
        mut t, rec, mem, ..
    } = fixture();
    full_init(&mut t);
    // Queue 0: the driver made 5 buffers available, the device used 3 (avail ring at base +
    // 0x1000, used ring at base + 0x2000; the index is the second u16 of each).
    mem.write_obj(5u16.to_le(), GuestAddress(0x1_1002)).unwrap();
    mem.write_obj(3u16.to_le(), GuestAddress(0x1_2002)).unwrap();
    rec.lock()
        .unwrap()
        .interrupt
        .clone()
        .unwrap()
        .signal_used_queue()
        .unwrap();
    let s = t.state_summary();
    assert!(s.contains("q0:avail=5,used=3"), "{s}");
    assert!(s.contains("q1:avail=0,used=0"), "{s}");
    assert!(s.contains(&format!("isr={INT_USED_BUFFER:#x}")), "{s}");
    assert!(s.contains(&format!("status={ALL_OK:#x}")), "{s}");
}
