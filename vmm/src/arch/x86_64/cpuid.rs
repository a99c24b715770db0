//! CPUID for each vCPU: KVM's supported CPUID, patched with the hypervisor bit, the vCPU's
//! APIC ID and topology, and the KVM paravirtual leaves the guest needs to find kvm-clock.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// KVM signature leaf.
pub const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
/// KVM paravirtual features leaf.
pub const KVM_CPUID_FEATURES: u32 = 0x4000_0001;
/// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
pub const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// kvm-clock features: CLOCKSOURCE (0), CLOCKSOURCE2 (3), CLOCKSOURCE_STABLE_BIT (24).
pub const KVM_CLOCK_FEATURES: u32 = (1 << 0) | (1 << 3) | (1 << 24);

const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_EDX_HTT: u32 = 1 << 28;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const TOPOLOGY_LEVEL_SMT: u32 = 1;
const TOPOLOGY_LEVEL_CORE: u32 = 2;

/// Errors of CPUID patching.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// A KVM leaf could not be appended.
    #[error("cannot add cpuid leaf {0:#x}: the cpuid table is full")]
    Full(u32),
}

/// What the host KVM offers beyond KVM_GET_SUPPORTED_CPUID.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFeatures {
    /// KVM_CAP_TSC_DEADLINE_TIMER: the in-kernel LAPIC emulates the TSC-deadline timer, which
    /// KVM_GET_SUPPORTED_CPUID does not report (without it the guest calibrates the APIC
    /// timer against the PIT at boot).
    pub tsc_deadline_timer: bool,
}

/// Patches KVM's supported CPUID for vCPU `vcpu_id` of `vcpu_count` (each vCPU one core).
pub fn patch_cpuid(
    cpuid: &mut CpuId,
    vcpu_id: u8,
    vcpu_count: u8,
    host: HostFeatures,
) -> Result<(), CpuidError> {
    let apic_id = u32::from(vcpu_id);
    let count = u32::from(vcpu_count.max(1));
    // Bits needed to number all vCPUs (the core level shift of leaf 0xb).
    let core_shift = u32::BITS - (count - 1).leading_zeros();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ecx |= LEAF1_ECX_HYPERVISOR;
                if host.tsc_deadline_timer {
                    entry.ecx |= LEAF1_ECX_TSC_DEADLINE;
                }
                // EBX: [31:24] initial APIC ID, [23:16] logical processors, [15:0] kept.
                entry.ebx = (entry.ebx & 0xffff) | (count << 16) | (apic_id << 24);
                if count > 1 {
                    entry.edx |= LEAF1_EDX_HTT;
                } else {
                    entry.edx &= !LEAF1_EDX_HTT;
                }
            }
            LEAF_EXT_TOPOLOGY => {
                entry.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
                entry.edx = apic_id;
                match entry.index {
                    0 => {
                        entry.eax = 0;
                        entry.ebx = 1;
                        entry.ecx = (TOPOLOGY_LEVEL_SMT << 8) | entry.index;
                    }
                    1 => {
                        entry.eax = core_shift;
                        entry.ebx = count;
                        entry.ecx = (TOPOLOGY_LEVEL_CORE << 8) | entry.index;
                    }
                    _ => {
                        entry.eax = 0;
                        entry.ebx = 0;
                        entry.ecx = entry.index;
                    }
                }
            }
            KVM_CPUID_SIGNATURE => {
                entry.eax = entry.eax.max(KVM_CPUID_FEATURES);
                [entry.ebx, entry.ecx, entry.edx] = KVM_SIGNATURE;
            }
            _ => {}
        }
    }
    let has = |cpuid: &CpuId, f: u32| cpuid.as_slice().iter().any(|e| e.function == f);
    if !has(cpuid, KVM_CPUID_SIGNATURE) {
        cpuid
            .push(kvm_cpuid_entry2 {
                function: KVM_CPUID_SIGNATURE,
                eax: KVM_CPUID_FEATURES,
                ebx: KVM_SIGNATURE[0],
                ecx: KVM_SIGNATURE[1],
                edx: KVM_SIGNATURE[2],
                ..Default::default()
            })
            .map_err(|_| CpuidError::Full(KVM_CPUID_SIGNATURE))?;
    }
    if !has(cpuid, KVM_CPUID_FEATURES) {
        cpuid
            .push(kvm_cpuid_entry2 {
                function: KVM_CPUID_FEATURES,
                eax: KVM_CLOCK_FEATURES,
                ..Default::default()
            })
            .map_err(|_| CpuidError::Full(KVM_CPUID_FEATURES))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0xdead_0840,
            edx: LEAF1_EDX_HTT,
            ..Default::default()
        }
    }

    fn find(c: &CpuId, f: u32, i: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == f && e.index == i)
            .unwrap()
    }

    #[test]
    fn hypervisor_bit_and_apic_id() {
        let mut c = CpuId::from_entries(&[entry(0, 0), entry(1, 0)]).unwrap();
        patch_cpuid(&mut c, 3, 4, HostFeatures::default()).unwrap();
        assert_eq!(find(&c, 1, 0).ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        let l1 = find(&c, 1, 0);
        assert_ne!(l1.ecx & (1 << 31), 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0840, "clflush size kept");
        assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
        let mut c = CpuId::from_entries(&[entry(1, 0)]).unwrap();
        let host = HostFeatures {
            tsc_deadline_timer: true,
        };
        patch_cpuid(&mut c, 0, 1, host).unwrap();
        assert_eq!(find(&c, 1, 0).edx & LEAF1_EDX_HTT, 0);
        assert_ne!(find(&c, 1, 0).ecx & LEAF1_ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn kvm_leaves_are_added_when_missing() {
        let mut c = CpuId::from_entries(&[entry(1, 0)]).unwrap();
        patch_cpuid(&mut c, 0, 1, HostFeatures::default()).unwrap();
        let sig = find(&c, KVM_CPUID_SIGNATURE, 0);
        assert_eq!(sig.eax, KVM_CPUID_FEATURES);
        let mut name = Vec::new();
        for r in [sig.ebx, sig.ecx, sig.edx] {
            name.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&name, b"KVMKVMKVM\0\0\0");
        let feat = find(&c, KVM_CPUID_FEATURES, 0);
        assert_eq!(feat.eax & KVM_CLOCK_FEATURES, KVM_CLOCK_FEATURES);
    }

    #[test]
    fn kvm_features_from_kvm_are_kept() {
        let supported = kvm_cpuid_entry2 {
            function: KVM_CPUID_FEATURES,
            eax: 0x0100_7afb,
            ..Default::default()
        };
        let sig = kvm_cpuid_entry2 {
            function: KVM_CPUID_SIGNATURE,
            ..Default::default()
        };
        let mut c = CpuId::from_entries(&[entry(1, 0), sig, supported]).unwrap();
        patch_cpuid(&mut c, 0, 1, HostFeatures::default()).unwrap();
        assert_eq!(find(&c, KVM_CPUID_FEATURES, 0).eax, 0x0100_7afb);
        assert_eq!(find(&c, KVM_CPUID_SIGNATURE, 0).ebx, KVM_SIGNATURE[0]);
        assert_eq!(c.as_slice().len(), 3, "nothing duplicated");
    }

    #[test]
    fn extended_topology_carries_the_apic_id() {
        let mut c = CpuId::from_entries(&[entry(0xb, 0), entry(0xb, 1), entry(0xb, 2)]).unwrap();
        patch_cpuid(&mut c, 5, 6, HostFeatures::default()).unwrap();
        for i in 0..3 {
            assert_eq!(find(&c, 0xb, i).edx, 5);
        }
        assert_eq!(find(&c, 0xb, 1).eax, 3, "6 vcpus need 3 bits");
        assert_eq!(find(&c, 0xb, 1).ebx, 6);
        assert_eq!(find(&c, 0xb, 1).ecx, 0x201);
        assert_eq!(find(&c, 0xb, 0).ecx, 0x100);
        assert_eq!(find(&c, 0xb, 2).ebx, 0);
    }
}
