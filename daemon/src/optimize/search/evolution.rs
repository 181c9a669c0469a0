//! Evolutionary search (μ + λ): children by mutation (one edit) or crossover (words,
//! calibration, layout and demonstrations) of tournament winners; the best survive.

use reprompt_protocol::parse;

use super::{Search, beats, mean};
use crate::eval::Split;
use crate::optimize::Result;
use crate::optimize::edits::{self, Edit, EditSpace, find_demos};

impl Search<'_> {
    fn full_train(&mut self, k: &str) -> Result<Option<f64>> {
        let all: Vec<usize> = (0..self.scorer.split_len(Split::Train)).collect();
        let limit = self.search_budget_left();
        Ok(self.scores(k, Split::Train, &all, limit)?.map(|o| mean(o.iter().map(|x| x.score))))
    }

    fn fitness(&self, k: &str) -> (f64, f64) {
        let r = &self.state.records[k];
        (r.full_mean(Split::Train).unwrap_or(f64::NEG_INFINITY), r.full_signal(Split::Train))
    }

    fn tournament(&mut self) -> String {
        let pop = &self.state.strategy.population;
        let a = pop[self.rng.below(pop.len())].clone();
        let b = pop[self.rng.below(pop.len())].clone();
        let (fa, fb) = (self.fitness(&a), self.fitness(&b));
        if beats(fb, fa) { b } else { a }
    }

    /// A random edit of `parent`, recorded.
    fn mutate(&mut self, parent: &str) -> Result<Option<String>> {
        let text = self.state.records[parent].text.clone();
        let options = self.candidates(&text)?;
        if options.is_empty() {
            return Ok(None);
        }
        let (edit, edited) = options[self.rng.below(options.len())].clone();
        let doc = self.doc(&text).clone();
        let mut lineage = self.state.records[parent].lineage.clone();
        lineage.push(edit.describe(&doc.source));
        Ok(Some(self.record(&edited, lineage)))
    }

    /// Crossover: `a` takes `b`'s label words with their calibration, layout and the
    /// demonstrations it lacks. Words `a` already has stay as they are, calibration included.
    fn crossover(&mut self, a: &str, b: &str) -> Option<String> {
        let (ta, tb) = (self.state.records[a].text.clone(), self.state.records[b].text.clone());
        let db = parse(&tb, None);
        let mut text = ta.clone();
        let mut lineage = self.state.records[a].lineage.clone();
        // Whether the edit applied (a refused one changes nothing).
        let mut apply = |text: &mut String, edit: Edit, space: &EditSpace| -> bool {
            let doc = parse(text, None);
            let Ok(t) = edits::apply_checked(&doc, &edit, space) else { return false };
            lineage.push(edit.describe(&doc.source));
            *text = t;
            true
        };
        let words = &db.settings.label_words;
        if let Some(labels) = db.settings.labels.as_ref().filter(|_| parse(&text, None).settings.label_words != *words)
        {
            let edit = if words.iter().any(|g| g.len() > 1) {
                Edit::LabelGroups(words.clone())
            } else {
                Edit::Labels(labels.value.clone())
            };
            // New words drop the old offsets; `b`'s were fitted to these words, so they come
            // along only where the words did.
            if apply(&mut text, edit, &self.space)
                && let Some(bias) = &db.settings.label_bias
            {
                apply(&mut text, Edit::LabelBias(bias.value.clone()), &self.space);
            }
        }
        if parse(&text, None).settings.format != db.settings.format {
            apply(&mut text, Edit::Format(db.settings.format), &self.space);
        }
        for demo in find_demos(&db, &self.space) {
            let doc = parse(&text, None);
            if find_demos(&doc, &self.space).iter().any(|d| d.source == demo.source) {
                continue;
            }
            if let (Some(at), Some(t)) = (
                edits::demo_point(&doc, &self.space),
                edits::demo_text(&doc, &self.space, &self.space.demos[demo.source]),
            ) {
                apply(&mut text, Edit::AddDemo { at, text: t }, &self.space);
            }
        }
        (text != ta).then(|| self.record(&text, lineage))
    }

    /// Evolution (μ + λ): children by crossover or mutation of tournament winners, all scored
    /// on the whole train split; the best `width` of parents and children survive.
    pub(super) fn evolution_iteration(&mut self) -> Result<()> {
        let width = self.state.config.width.max(2);
        if self.state.strategy.population.is_empty() {
            let original = self.state.original_key.clone();
            let mut population = vec![original.clone()];
            let start = self.starting_point();
            if start != original {
                population.push(start);
            }
            for _ in 0..width * 2 {
                if population.len() >= width {
                    break;
                }
                if let Some(child) = self.mutate(&original)?
                    && !population.contains(&child)
                    && self.full_train(&child)?.is_some()
                {
                    population.push(child);
                }
            }
            self.state.strategy.population = population;
            return Ok(());
        }
        let mut children = Vec::new();
        for _ in 0..width {
            let a = self.tournament();
            let child = if self.rng.next_f32() < 0.3 {
                let b = self.tournament();
                match self.crossover(&a, &b) {
                    Some(c) => Some(c),
                    None => self.mutate(&a)?,
                }
            } else {
                self.mutate(&a)?
            };
            if let Some(child) = child
                && self.full_train(&child)?.is_some()
            {
                children.push(child);
            }
        }
        let mut pool = self.state.strategy.population.clone();
        for c in children {
            if !pool.contains(&c) {
                pool.push(c);
            }
        }
        pool.sort_by(|a, b| {
            let (fa, fb) = (self.fitness(a), self.fitness(b));
            fb.0.total_cmp(&fa.0).then(fb.1.total_cmp(&fa.1))
        });
        pool.truncate(width);
        self.state.strategy.population = pool;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::edits::apply_checked;
    use crate::optimize::search::Strategy;
    use crate::optimize::search::fixture::*;

    #[test]
    fn crossover_carries_several_words_per_label() {
        let mut scorer = fresh_ranking();
        let mut search = Search::new(EXAMPLE, config(Strategy::Evolution, 1500), space(), &mut scorer).unwrap();
        let doc = parse(EXAMPLE, None);
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let groups = vec![words(&["harsh", "poor"]), words(&["sweet", "warm"])];
        let grouped = apply_checked(&doc, &Edit::LabelGroups(groups.clone()), &search.space).unwrap();
        let single = apply_checked(&doc, &Edit::Labels(words(&["bad", "good"])), &search.space).unwrap();
        let (a, b) = (search.record(&single, Vec::new()), search.record(&grouped, Vec::new()));
        let child = search.crossover(&a, &b).expect("a child");
        assert_eq!(parse(&search.state.records[&child].text, None).settings.label_words, groups);
        let back = search.crossover(&b, &a).expect("a child");
        assert_eq!(
            parse(&search.state.records[&back].text, None).settings.label_words,
            [words(&["bad"]), words(&["good"])]
        );
    }

    #[test]
    fn crossover_carries_the_calibration_with_the_words_and_keeps_its_own_for_the_same_words() {
        let mut scorer = fresh_ranking();
        let mut search = Search::new(EXAMPLE, config(Strategy::Evolution, 1500), space(), &mut scorer).unwrap();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let with = |text: &str, edit: Edit, space: &EditSpace| apply_checked(&parse(text, None), &edit, space).unwrap();
        let bad_good = with(EXAMPLE, Edit::Labels(words(&["bad", "good"])), &search.space);
        let calibrated = with(&bad_good, Edit::LabelBias(vec![0.0, 0.75]), &search.space);
        let other = with(EXAMPLE, Edit::Labels(words(&["poor", "excellent"])), &search.space);
        let other = with(&other, Edit::LabelBias(vec![0.0, -1.5]), &search.space);
        let bias =
            |search: &Search, k: &str| parse(&search.state.records[k].text, None).settings.label_bias.map(|b| b.value);
        let (plain, cal, oth) = (
            search.record(&bad_good, Vec::new()),
            search.record(&calibrated, Vec::new()),
            search.record(&other, Vec::new()),
        );
        // The same words: nothing to take, and the calibration stays (it used to be dropped).
        assert!(search.crossover(&cal, &plain).is_none());
        // Other words come with the offsets fitted to them: here nothing else differs, so the
        // child is `b` itself.
        let child = search.crossover(&cal, &oth).expect("a child");
        assert_eq!(bias(&search, &child), Some(vec![0.0, -1.5]));
        assert_eq!(child, oth);
        // Words without offsets drop the old ones.
        let child = search.crossover(&oth, &plain).expect("a child");
        assert_eq!(bias(&search, &child), None);
    }

    #[test]
    fn crossover_leaves_the_calibration_behind_when_the_words_do_not_come() {
        let mut scorer = fresh_ranking();
        let mut search = Search::new(EXAMPLE, config(Strategy::Evolution, 1500), space(), &mut scorer).unwrap();
        // `b`'s words cannot be `a`'s (three labels for two ids), so its offsets, fitted to
        // those words, must not land on `a`'s words, though two numbers would fit them.
        let three = EXAMPLE.replace(
            "reprompt.labels: [terrible, great]",
            "reprompt.labels: [awful, fine, great]\nreprompt.label_bias: [0.0, 0.5]",
        );
        assert_ne!(three, EXAMPLE);
        assert_eq!(parse(&three, None).settings.label_bias.map(|b| b.value), Some(vec![0.0, 0.5]));
        let (a, b) = (search.record(EXAMPLE, Vec::new()), search.record(&three, Vec::new()));
        assert!(search.crossover(&a, &b).is_none(), "nothing of b applies to a");
        // Where the words do come, the offsets come with them.
        let two = three.replace("[awful, fine, great]", "[awful, great]");
        let b = search.record(&two, Vec::new());
        let child = search.crossover(&a, &b).expect("a child");
        let settings = parse(&search.state.records[&child].text, None).settings;
        assert_eq!(settings.labels.map(|l| l.value), Some(vec!["awful".to_string(), "great".to_string()]));
        assert_eq!(settings.label_bias.map(|b| b.value), Some(vec![0.0, 0.5]));
    }
}
