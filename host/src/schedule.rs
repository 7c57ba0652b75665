//! The host's schedule tables: the core's tables (the same bits), kept in a `Vec` on the heap
//! instead of the core's fixed-capacity array, so that no thread needs a large stack.

use elbo_core::schedule::{EMPTY_STEP, LogSnrSchedule, fill_beta_table, fill_log_snr_table};
use elbo_core::{BetaSchedule, NoiseSchedule, Step};

/// A discrete schedule of `T <= MAX_STEPS` timesteps.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSchedule {
    table: Vec<Step>,
}

impl HostSchedule {
    /// The table of a beta schedule (see [`elbo_core::Schedule::new`]).
    pub fn new(kind: &BetaSchedule<'_>, steps: usize, zero_terminal_snr: bool) -> elbo_core::Result<Self> {
        let mut table = empty(steps)?;
        fill_beta_table(kind, steps, zero_terminal_snr, &mut table)?;
        Ok(HostSchedule { table })
    }

    /// The discretisation of a continuous log-SNR schedule (see
    /// [`elbo_core::Schedule::from_log_snr`]).
    pub fn from_log_snr<S: LogSnrSchedule + ?Sized>(schedule: &S, steps: usize) -> elbo_core::Result<Self> {
        let mut table = empty(steps)?;
        fill_log_snr_table(schedule, steps, &mut table)?;
        Ok(HostSchedule { table })
    }

    /// The table entries `t = 1..=T` in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Step> + '_ {
        self.table.iter()
    }
}

/// A table of `steps` entries to fill, within the host's limit.
fn empty(steps: usize) -> elbo_core::Result<Vec<Step>> {
    if steps == 0 {
        return Err(elbo_core::Error::ZeroSteps);
    }
    if steps > crate::MAX_STEPS {
        return Err(elbo_core::Error::Capacity { requested: steps, capacity: crate::MAX_STEPS });
    }
    Ok(vec![EMPTY_STEP; steps])
}

impl NoiseSchedule for HostSchedule {
    fn steps(&self) -> usize {
        self.table.len()
    }

    fn step(&self, t: usize) -> elbo_core::Result<Step> {
        match t.checked_sub(1).and_then(|i| self.table.get(i)) {
            Some(s) => Ok(*s),
            None => Err(elbo_core::Error::TimestepOutOfRange { t, steps: self.table.len() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heap table is the core's fixed-capacity table, bit for bit.
    #[test]
    fn the_same_bits_as_the_core_table() {
        for (kind, z) in
            [(BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, false), (BetaSchedule::SquaredCosCapV2, true)]
        {
            let host = HostSchedule::new(&kind, 1000, z).unwrap();
            let core = elbo_core::Schedule::<1000>::new(&kind, 1000, z).unwrap();
            assert_eq!(host.steps(), core.steps());
            for t in 1..=1000 {
                assert_eq!(host.step(t).unwrap(), core.step(t).unwrap());
            }
        }
        assert!(HostSchedule::new(&BetaSchedule::SquaredCosCapV2, crate::MAX_STEPS + 1, false).is_err());
    }
}
