//! The graph of a pipeline's steps: an order in which every step comes after its
//! dependencies, the cycles that forbid one, and the steps upstream of each step.

use std::collections::BTreeSet;

/// Steps `0..n`, each with the indexes of the steps it depends on.
pub struct Dag<'a> {
    pub depends_on: &'a [Vec<usize>],
}

impl Dag<'_> {
    /// Every step after its dependencies (file order among steps that are ready together),
    /// or one cycle, as step indexes with its first step repeated at the end.
    pub fn order(&self) -> Result<Vec<usize>, Vec<usize>> {
        let n = self.depends_on.len();
        let mut placed = vec![false; n];
        let mut order = Vec::with_capacity(n);
        while order.len() < n {
            let ready: Vec<usize> = (0..n)
                .filter(|&i| !placed[i] && self.depends_on[i].iter().all(|&d| placed[d]))
                .collect();
            if ready.is_empty() {
                let start = (0..n).find(|&i| !placed[i]).expect("a step is left");
                return Err(self.cycle_from(start, &placed));
            }
            for i in ready {
                placed[i] = true;
                order.push(i);
            }
        }
        Ok(order)
    }

    /// A step that cannot be placed depends, directly or not, on a cycle: follow unplaced
    /// dependencies until a step repeats.
    fn cycle_from(&self, start: usize, placed: &[bool]) -> Vec<usize> {
        let mut path = vec![start];
        let mut current = start;
        loop {
            let next = self.depends_on[current]
                .iter()
                .copied()
                .find(|&d| !placed[d])
                .expect("an unplaced step has an unplaced dependency");
            if let Some(at) = path.iter().position(|&s| s == next) {
                let mut cycle = path[at..].to_vec();
                cycle.push(next);
                return cycle;
            }
            path.push(next);
            current = next;
        }
    }

    /// The steps upstream of each step: its dependencies, theirs, and so on (a step in a
    /// cycle is upstream of itself).
    pub fn upstream(&self) -> Vec<BTreeSet<usize>> {
        (0..self.depends_on.len())
            .map(|start| {
                let mut seen = BTreeSet::new();
                let mut todo: Vec<usize> = self.depends_on[start].clone();
                while let Some(step) = todo.pop() {
                    if seen.insert(step) {
                        todo.extend(self.depends_on[step].iter().copied());
                    }
                }
                seen
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_dependencies_first_and_keeps_file_order_among_ready_steps() {
        // 0 <- 1 <- 3, 0 <- 2, 4 alone
        let deps = vec![vec![], vec![0], vec![0], vec![1, 2], vec![]];
        let dag = Dag { depends_on: &deps };
        let order = dag.order().unwrap();
        assert_eq!(order, vec![0, 4, 1, 2, 3]);
        let up = dag.upstream();
        assert_eq!(up[3], BTreeSet::from([0, 1, 2]));
        assert!(up[4].is_empty());
    }

    #[test]
    fn finds_a_cycle_behind_a_step_that_waits_on_it() {
        // 0 -> 1 -> 2 -> 1 (0 depends on the cycle)
        let deps = vec![vec![1], vec![2], vec![1]];
        let dag = Dag { depends_on: &deps };
        assert_eq!(dag.order().unwrap_err(), vec![1, 2, 1]);
        assert_eq!(dag.upstream()[0], BTreeSet::from([1, 2]));
        let own = vec![vec![0]];
        assert_eq!(Dag { depends_on: &own }.order().unwrap_err(), vec![0, 0]);
    }
}
