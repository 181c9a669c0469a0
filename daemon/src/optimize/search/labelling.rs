//! Label words the search learns as it goes: the template step at the start (LM-BFF's
//! template, words ranked there and screened out of sample against the built-in sets or the
//! prompt's own words) and rankings at the best prompt after a new answer cue.

use reprompt_protocol::PromptDocument;

use super::{Search, add_label_sets, add_sets};
use crate::eval::Split;
use crate::optimize::Result;
use crate::optimize::edits::{Edit, EditSpace, apply_checked, keeps_labels};
use crate::optimize::labels;

/// Most label rankings per run at the best prompt so far
/// ([`SearchConfig::ranked_labels`](super::SearchConfig::ranked_labels)), besides the one at
/// the start (`Search::rank_templates`).
pub const MAX_RANKINGS: usize = 4;

/// What a ranking offers the search: the words of its sets (the caller asks for at least
/// [`labels::GROUP_SETS`]) as one group per label ([`labels::word_groups`]), or, where they make no group, its best
/// `keep` sets. Not both: a single pair is the best of hundreds on the few training examples,
/// so it wins the search's training comparisons by its chance fit; on the development splits
/// the search then left the group (84.1 / 81.0% held out) for such pairs (73.0%).
fn ranked_offers(mut sets: Vec<Vec<String>>, keep: usize) -> (Vec<Vec<String>>, Option<Vec<Vec<String>>>) {
    match labels::word_groups(&sets, labels::GROUP_WORDS) {
        Some(groups) => (Vec::new(), Some(groups)),
        None => {
            sets.truncate(keep);
            (sets, None)
        }
    }
}

/// The fixed set (built-in, or the prompt's own words) that does best out of sample among
/// those a ranking was judged against ([`labels::cross_fitted`]); the first of equals.
fn best_fixed(screened: &[labels::Screened]) -> Option<&labels::Screened> {
    screened.iter().filter(|s| !s.ranked).fold(None, |best, s| match best {
        Some(b) if s.accuracy <= b.accuracy => Some(b),
        _ => Some(s),
    })
}

/// Whether a ranking's words do clearly better out of sample than the best fixed set they
/// were judged against ([`labels::clearly_better`]: by more than a standard error). Words
/// ranked on 32 examples and only as good as `negative / positive` there have been fitted to
/// those examples: they look best on them and worse elsewhere. Where nothing was to be judged
/// (`None`: calibration off) they hold; where no fixed set could be judged (a split too
/// small to fit offsets on its halves), they do not: unchecked, they would win the search's
/// training comparisons by their fit alone.
fn ranked_holds_up(screened: Option<&[labels::Screened]>) -> bool {
    let Some(screened) = screened else { return true };
    best_fixed(screened).is_some_and(|fixed| screened.iter().any(|s| s.ranked && labels::clearly_better(s, fixed)))
}

/// The cue the author's own words name: the last of `cues` (they go from generic to
/// specific: `Answer:` … `Sentiment:`, `Topic:`) whose word the prompt's template uses, whole
/// word or its plural, any case (`Sentiment:` for "…the sentiment of movie reviews. Answer
/// with one word.", `Topic:` for "You sort news articles into topics.", `Category:` for
/// "categories").
pub fn named_cue(doc: &PromptDocument, cues: &[String]) -> Option<String> {
    let body = doc.source.get(doc.body_span.start..doc.body_span.end).unwrap_or_default().to_lowercase();
    let words: std::collections::HashSet<&str> = body.split(|c: char| !c.is_alphanumeric()).collect();
    let named = |word: &str| {
        let plural = match word.strip_suffix('y') {
            Some(stem) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{stem}ies"),
            _ if word.ends_with(['s', 'x']) || word.ends_with("ch") || word.ends_with("sh") => format!("{word}es"),
            _ => format!("{word}s"),
        };
        words.contains(word) || words.contains(plural.as_str())
    };
    cues.iter().rev().find(|c| named(&c.trim_end_matches(':').to_lowercase())).cloned()
}

/// Where a prompt's answer goes, as a key: its format and the last line of the template
/// (the cue or question the answer follows), lower-cased, with its label words blanked out
/// (relabelling or editing the instructions above is no new context).
pub fn answer_context(doc: &PromptDocument) -> String {
    let body = doc.source.get(doc.body_span.start..doc.body_span.end).unwrap_or_default().trim_end();
    let mut tail = body.rsplit('\n').next().unwrap_or_default().trim().to_lowercase();
    if let Some(labels) = &doc.settings.labels {
        for word in labels.value.iter().filter(|w| !w.is_empty()) {
            tail = tail.replace(&word.to_lowercase(), "<label>");
        }
    }
    format!("{:?}: {tail}", doc.settings.format)
}

/// The label sets words ranked at a prompt labelled `labels` are judged against
/// ([`labels::cross_fitted`]): the edit space's sets with as many labels, else `labels`.
pub fn judged_against(space: &EditSpace, labels: Vec<String>) -> Vec<Vec<String>> {
    let sets: Vec<Vec<String>> = space.label_sets.iter().filter(|s| s.len() == labels.len()).cloned().collect();
    if sets.is_empty() { vec![labels] } else { sets }
}

impl Search<'_> {
    /// Ranks label words at the best prompt so far (the author's at the start) if its answer
    /// context is new, labels are asked for and the budget allows: the sets join the edit
    /// space (and the checkpoint).
    pub(super) fn ensure_ranked_labels(&mut self) -> Result<()> {
        let keep = self.state.config.ranked_labels;
        let cost = self.scorer.split_len(Split::Train);
        if keep == 0 || self.state.rankings >= MAX_RANKINGS || self.search_budget_left() < cost {
            return Ok(());
        }
        let best = match self.best_by(Split::Train) {
            Some((k, _)) => self.state.records[k].text.clone(),
            None => self.state.original.clone(),
        };
        let context = answer_context(self.doc(&best));
        // Only where the answer follows a cue (`Sentiment:`): after a question or an
        // instruction the model's next words are rarely answers, and the words ranked there
        // were noise on the development splits.
        if !context.ends_with(':') || self.state.ranked_at.contains(&context) {
            return Ok(());
        }
        self.state.ranked_at.push(context);
        let fixed = self.fixed_label_sets(&best);
        let Some((sets, screened)) = self.scorer.rank_template(&best, keep.max(labels::GROUP_SETS), &fixed)? else {
            return Ok(());
        };
        self.state.spent += cost;
        self.state.rankings += 1;
        if ranked_holds_up(screened.as_deref()) {
            let (sets, groups) = ranked_offers(sets, keep);
            self.offer_ranked(&sets, groups);
        }
        Ok(())
    }

    /// With calibration on, the label sets a ranking at `text` is judged against out of sample
    /// ([`labels::cross_fitted`]): the built-in sets with as many labels, or, where there are
    /// none (the built-in sets are pairs: a topic or five-grade classifier), the words `text`
    /// already has — ranked words that cannot clearly beat them would win the search's
    /// training comparisons by their fit alone. None without calibration.
    fn fixed_label_sets(&mut self, text: &str) -> Vec<Vec<String>> {
        if !self.state.config.calibrate {
            return Vec::new();
        }
        let Some(labels) = self.doc(text).settings.labels.as_ref().map(|l| l.value.clone()) else {
            return Vec::new();
        };
        judged_against(&self.space, labels)
    }

    /// Puts a ranking's sets and groups into the edit space and the state.
    fn offer_ranked(&mut self, sets: &[Vec<String>], groups: Option<Vec<Vec<String>>>) {
        add_label_sets(&mut self.space, sets);
        add_sets(&mut self.state.ranked_labels, sets);
        if let Some(groups) = groups {
            let groups = [groups];
            add_sets(&mut self.space.label_groups, &groups);
            add_sets(&mut self.state.ranked_groups, &groups);
        }
    }

    /// With ranked labels on, once at the start: the author's prompt as a bare completion
    /// prompt (LM-BFF's template: the example's lines and a cue; a plain completion where
    /// there are no sentences to leave out) ending in the answer cue the author's own words
    /// name (`Sentiment:` for a prompt about "the sentiment of movie reviews"), label words
    /// ranked there, and that prompt with the best set scored on all of train, where it
    /// competes like every prompt found; its sets join the edit space. Costs two trains; not
    /// made when no cue is named or the budget cannot pay for it.
    pub(super) fn rank_templates(&mut self) -> Result<()> {
        let keep = self.state.config.ranked_labels;
        let n = self.scorer.split_len(Split::Train);
        if (keep == 0 && !self.state.config.calibrate)
            || self.state.templates_ranked
            || self.search_budget_left() < n + n * self.per_example
        {
            return Ok(());
        }
        self.state.templates_ranked = true;
        let original = self.state.original.clone();
        let doc = self.doc(&original).clone();
        let Some(cue) = named_cue(&doc, &self.space.cues) else { return Ok(()) };
        let edited = [Edit::Bare(cue.clone()), Edit::Completion(cue.clone()), Edit::AnswerCue(cue)]
            .into_iter()
            .find_map(|e| apply_checked(&doc, &e, &self.space).ok().map(|text| (e, text)));
        let Some((edit, text)) = edited else { return Ok(()) };
        if keep == 0 {
            // No ranking: the template with the author's own words (calibration can fix their lean).
            let k = self.record(&text, vec![edit.describe(&doc.source)]);
            let all: Vec<usize> = (0..n).collect();
            let limit = self.search_budget_left();
            self.scores(&k, Split::Train, &all, limit)?;
            return Ok(());
        }
        let context = answer_context(self.doc(&text));
        self.state.ranked_at.push(context);
        let fixed = self.fixed_label_sets(&text);
        let Some((sets, mut screened)) = self.scorer.rank_template(&text, keep.max(labels::GROUP_SETS), &fixed)? else {
            return Ok(());
        };
        if !self.state.config.calibrate {
            screened = None;
        }
        self.state.spent += n;
        let (sets, groups) = ranked_offers(sets, keep);
        // Ranked words that do not clearly beat every fixed set out of sample stay out of
        // the edit space: on the training examples they would still look best, and win the
        // search's comparisons.
        let holds_up = ranked_holds_up(screened.as_deref());
        let screened = screened.unwrap_or_default();
        if holds_up {
            self.offer_ranked(&sets, groups.clone());
        }
        let ranked_labels = match (groups, sets.first()) {
            (Some(groups), _) => Edit::LabelGroups(groups),
            (None, Some(first)) => Edit::Labels(first.clone()),
            (None, None) => return Ok(()),
        };
        // With calibration, the words the template starts with are the ones that do best out of
        // sample ([`labels::cross_fitted`]): the ranking's where they clearly beat every
        // fixed set, else the best fixed set, calibrated on all of train.
        self.state.template_screen = screened.iter().map(labels::Screened::record).collect();
        let best = if holds_up { None } else { best_fixed(&screened) };
        let mut steps = vec![ranked_labels];
        if let Some(best) = best {
            steps = vec![if best.words.iter().all(|g| g.len() == 1) {
                Edit::Labels(best.words.iter().map(|g| g[0].clone()).collect())
            } else {
                Edit::LabelGroups(best.words.clone())
            }];
        } else if !holds_up {
            // Nothing could be judged: the template keeps the author's own words.
            steps.clear();
        }
        if !steps.is_empty()
            && let Some(start) = screened.iter().find(|s| best.is_none_or(|b| b.words == s.words))
            && start.bias.iter().any(|b| b.abs() >= 0.05)
        {
            steps.push(Edit::LabelBias(start.bias.clone()));
        }
        let mut lineage = vec![edit.describe(&doc.source)];
        let mut text = text;
        for step in steps {
            let current = self.doc(&text).clone();
            // The author's own words, where they do best, are kept as written (a relabelling
            // to them is only taken to drop a calibration fitted to another layout).
            if keeps_labels(&current, &step) && current.settings.label_bias.is_none() {
                continue;
            }
            if let Ok(next) = apply_checked(&current, &step, &self.space) {
                lineage.push(step.describe(&current.source));
                text = next;
            }
        }
        let k = self.record(&text, lineage);
        let all: Vec<usize> = (0..n).collect();
        let limit = self.search_budget_left();
        self.scores(&k, Split::Train, &all, limit)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::edits;
    use crate::optimize::search::fixture::*;
    use crate::optimize::search::{Record, SearchConfig, SearchResult, Stop, Strategy};
    use reprompt_protocol::parse;

    #[test]
    fn the_template_starts_from_the_words_that_do_best_out_of_sample_calibrated() {
        let template_of = |original: &str, group: f64, posneg: f64, calibrate: bool| {
            let mut scorer = Screening { ranking: fresh_ranking(), group, posneg, fixed: Vec::new() };
            let cfg = SearchConfig { calibrate, ..config(Strategy::Greedy, 1500) };
            let mut search = Search::new(original, cfg, space(), &mut scorer).unwrap();
            search.run(None, Some(0), &mut |_| {}).unwrap().unwrap_err();
            let state = search.state.clone();
            drop(search);
            let bare = r#"bare completion prompt: the example's lines and "Sentiment:""#;
            let record = state
                .records
                .values()
                .find(|r| r.lineage.first().map(String::as_str) == Some(bare))
                .expect("a template")
                .clone();
            assert!(record.train.iter().all(Option::is_some), "scored on all of train");
            (record, state, scorer.fixed)
        };
        let template = |group: f64, posneg: f64, calibrate: bool| template_of(EXAMPLE, group, posneg, calibrate);
        // A built-in set beats the ranked words out of sample: the template takes it, calibrated.
        let (record, state, fixed) = template(0.6, 0.8, true);
        assert_eq!(fixed.len(), 6, "the built-in two-label sets: {fixed:?}");
        assert_eq!(
            record.lineage[1..],
            ["label words negative / positive", "calibrate the labels: label bias [0, -0.5]"]
        );
        let doc = parse(&record.text, None);
        assert!(doc.diagnostics.is_empty(), "{:?}", doc.diagnostics);
        assert_eq!(doc.settings.label_bias.map(|b| b.value), Some(vec![0.0, -0.5]));
        assert_eq!(state.template_screen.len(), 7);
        assert_eq!(state.template_screen[0], ("dreadful, sad / superb, glad".to_string(), 0.6, true));
        // Beaten out of sample, the ranked words never join the edit space (at later cues
        // neither: the same world judges them there).
        assert!(state.ranked_groups.is_empty() && state.ranked_labels.is_empty());
        assert!(state.records.values().all(|r| !r.text.contains("dreadful")));
        // Where the author's own words do best, they stay as written, calibrated: no
        // relabelling to the same words (it would only re-quote them).
        let (record, _, _) = template(0.6, 0.5, true);
        assert_eq!(record.lineage[1..], ["calibrate the labels: label bias [0, -0.5]"]);
        assert!(record.text.contains("reprompt.labels: [terrible, great]\n"), "{}", record.text);
        // Unless the author's prompt carries a calibration of its own: it was fitted to
        // another layout, and the relabelling drops it before the template's is set.
        let calibrated =
            EXAMPLE.replace("reprompt.reward: accuracy\n", "reprompt.reward: accuracy\nreprompt.label_bias: [0, 2]\n");
        let (record, _, _) = template_of(&calibrated, 0.6, 0.5, true);
        assert_eq!(record.lineage[1..], ["label words terrible / great", "calibrate the labels: label bias [0, -0.5]"]);
        assert!(record.text.contains("reprompt.label_bias: [0, -0.5]\n") && !record.text.contains("[0, 2]"));
        // A tie goes to the built-in set (one-standard-error rule): the ranked words stay out.
        let (record, state, _) = template(0.8, 0.8, true);
        assert_eq!(record.lineage[1], "label words negative / positive");
        assert!(state.ranked_groups.is_empty());
        // Clearly better (three more examples right, none fewer), the ranked words win, with
        // their own offsets, and are offered.
        let (record, state, _) = template(0.9, 0.8, true);
        assert_eq!(
            record.lineage[1..],
            ["label words dreadful, sad / superb, glad", "calibrate the labels: label bias [0, 0.3]"]
        );
        assert_eq!(state.ranked_groups[0], [["dreadful", "sad"], ["superb", "glad"]]);
        // Without calibration nothing is screened: the ranked words, as they are.
        let (record, state, fixed) = template(0.6, 0.8, false);
        assert!(fixed.is_empty() && state.template_screen.is_empty());
        assert_eq!(record.lineage[1..], ["label words dreadful, sad / superb, glad"]);
        // Built-in sets given but none judged: the ranked words are unchecked, so they neither
        // start the template (the author's words do) nor join the edit space.
        let (record, state, fixed) = template(0.9, -1.0, true);
        assert_eq!(fixed.len(), 6);
        assert!(record.lineage[1..].is_empty(), "{:?}", record.lineage);
        assert!(state.ranked_groups.is_empty() && state.ranked_labels.is_empty());
        assert!(state.records.values().all(|r| !r.text.contains("dreadful")));
    }

    #[test]
    fn labels_are_ranked_after_new_cues_within_the_budget() {
        for strategy in [Strategy::Greedy, Strategy::Ppo] {
            let mut scorer = fresh_ranking();
            let cfg = SearchConfig { ranked_labels: 1, ..config(strategy, 1500) };
            let mut search = Search::new(EXAMPLE, cfg, space(), &mut scorer).unwrap();
            let result = search.run(None, None, &mut |_| {}).unwrap().unwrap();
            let state = search.state.clone();
            drop(search);
            // Every ranking costs the train split and is counted; the budget holds. First the
            // bare prompt with the cue the author's words name, then at most MAX_RANKINGS new
            // contexts of the best prompt.
            let rankings = scorer.asked.len();
            assert!((1..=1 + MAX_RANKINGS).contains(&rankings), "{strategy:?}: {rankings}");
            assert_eq!(state.spent, scorer.world.scored + rankings * 24);
            assert!(state.spent <= 1500);
            assert_eq!(state.rankings + 1, rankings);
            assert!(state.templates_ranked);
            // The bare prompt with each label's ranked words (the words of the sets the
            // ranking gave, beyond `keep`), scored on all of train before the search began.
            let lineage = [
                r#"bare completion prompt: the example's lines and "Sentiment:""#,
                "label words dreadful, sad / superb, glad",
            ];
            let template =
                state.records.values().find(|r| r.lineage == lineage).expect("the template winner is recorded");
            assert!(template.text.ends_with("---\nReview: {{sentence}}\nSentiment:\n"), "{}", template.text);
            assert!(template.text.contains(r#"reprompt.labels: [["dreadful", "sad"], ["superb", "glad"]]"#));
            assert!(template.train.iter().all(Option::is_some));
            assert_eq!(state.ranked_groups[0], [["dreadful", "sad"], ["superb", "glad"]]);
            assert_eq!(template.found_at, 24 + 24);
            // Only at prompts whose answer follows a cue, each cue once; a refusal is free
            // and not asked again.
            let context = |t: &String| answer_context(&parse(t, None));
            let contexts: Vec<String> = scorer.asked.iter().map(context).collect();
            let refused: Vec<String> = scorer.refused.iter().map(context).collect();
            assert!(contexts.iter().chain(&refused).all(|c| c.ends_with(':')), "{contexts:?} {refused:?}");
            let mut all = [contexts.clone(), refused].concat();
            all.sort();
            let mut at = state.ranked_at.clone();
            at.sort();
            assert_eq!(all, at);
            // The group is offered, not the single sets it came from; the search goes on
            // from the ranked words (prompts beyond the template have them).
            assert!(result.ranked_labels.is_empty(), "{:?}", result.ranked_labels);
            assert!(!state.records.values().any(|r| r.text.contains(r#"reprompt.labels: ["dreadful", "superb"]"#)));
            let ranked = |r: &&Record| r.text.contains(r#"reprompt.labels: [["dreadful", "sad"], ["superb", "glad"]]"#);
            assert!(
                state.records.values().filter(ranked).count() > 1,
                "{strategy:?} never went on from the ranked labels"
            );
        }
        // A chat prompt ending in a cue: the scorer refuses, which costs nothing and is not
        // asked again; the same prompt in plain text is ranked and paid for.
        let chat = EXAMPLE.replace("Answer with one word.", "Answer with one word.\nSentiment:");
        let plain = chat.replace("reprompt.reward: accuracy\n", "reprompt.reward: accuracy\nreprompt.format: plain\n");
        for (text, ranked) in [(&chat, false), (&plain, true)] {
            let mut scorer = fresh_ranking();
            let cfg = SearchConfig { ranked_labels: 2, ..config(Strategy::Greedy, 1500) };
            let mut search = Search::new(text, cfg.clone(), space(), &mut scorer).unwrap();
            assert!(search.space.bare, "bare prompts come with ranked labels");
            let gsm8k = include_str!("../../../../examples/gsm8k/gsm8k.prompt");
            let mut other = fresh_ranking();
            let generation = Search::new(gsm8k, cfg.clone(), space(), &mut other).unwrap();
            assert!(!generation.space.bare, "no bare prompts for generation");
            drop(generation);
            search.ensure_ranked_labels().unwrap();
            search.ensure_ranked_labels().unwrap();
            let (spent, rankings, at) = (search.state.spent, search.state.rankings, search.state.ranked_at.clone());
            drop(search);
            assert_eq!(at, [answer_context(&parse(text, None))]);
            assert_eq!((scorer.asked.len(), scorer.refused.len()), if ranked { (1, 0) } else { (0, 1) });
            assert_eq!((spent, rankings), if ranked { (24, 1) } else { (0, 0) });
        }
        // The ranked sets are part of the checkpoint: a resumed run is the same run.
        let dir = std::env::temp_dir().join(format!("reprompt-ranking-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = SearchConfig { ranked_labels: 1, ..config(Strategy::Greedy, 1500) };
        let fresh = fresh_ranking;
        let mut scorer = fresh();
        let whole = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap().run(None, None, &mut |_| {});
        let mut scorer = fresh();
        let mut first = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap();
        assert_eq!(first.run(Some(&dir), Some(12), &mut |_| {}).unwrap(), Err(Stop::Interrupted));
        assert!(!first.state.ranked_groups.is_empty(), "ranked before the interruption");
        drop(first);
        let mut scorer = fresh();
        let resumed =
            Search::load(&dir, EXAMPLE, &cfg, space(), &mut scorer).unwrap().run(Some(&dir), None, &mut |_| {});
        let timeless = |r: SearchResult| SearchResult { seconds: 0.0, ..r };
        assert_eq!(timeless(resumed.unwrap().unwrap()), timeless(whole.unwrap().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
        // On by default (4 sets); 0 turns it off: never asked, nothing spent on it (and without
        // calibration either, no bare prompts: the author's words at a bare prompt are no better
        // than chance until calibrated).
        assert_eq!(SearchConfig::default().ranked_labels, 4);
        let mut scorer = fresh_ranking();
        let off = SearchConfig { ranked_labels: 0, calibrate: false, ..config(Strategy::Greedy, 1500) };
        let mut search = Search::new(EXAMPLE, off, space(), &mut scorer).unwrap();
        assert!(!search.space.bare);
        search.run(None, None, &mut |_| {}).unwrap().unwrap();
        let spent = search.state.spent;
        drop(search);
        assert!(scorer.asked.is_empty());
        assert_eq!(spent, scorer.world.scored);
    }

    #[test]
    fn a_ranking_is_judged_against_the_built_in_sets_of_its_size_or_else_the_prompts_own_words() {
        let three = EXAMPLE.replace("reprompt.labels: [terrible, great]", "reprompt.labels: [bad, okay, great]");
        assert_ne!(three, EXAMPLE);
        let unlabelled = EXAMPLE.replace("reprompt.labels: [terrible, great]\n", "");
        assert_ne!(unlabelled, EXAMPLE);
        let fixed = |calibrate: bool| {
            let mut scorer = Screening { ranking: fresh_ranking(), group: 0.6, posneg: 0.8, fixed: Vec::new() };
            let cfg = SearchConfig { calibrate, ..config(Strategy::Greedy, 1500) };
            let mut search = Search::new(EXAMPLE, cfg, space(), &mut scorer).unwrap();
            [EXAMPLE, three.as_str(), unlabelled.as_str()].map(|text| search.fixed_label_sets(text))
        };
        let [two, own, none] = fixed(true);
        // Two labels: the built-in pairs, the author's `terrible / great` among them.
        assert_eq!(two.len(), 6, "{two:?}");
        assert!(two.iter().all(|s| s.len() == 2) && two.contains(&vec!["terrible".to_string(), "great".into()]));
        // No built-in set has three labels: the words the prompt has stand in for them.
        assert_eq!(own, vec![vec!["bad".to_string(), "okay".into(), "great".into()]]);
        assert!(none.is_empty());
        // Without calibration nothing is judged.
        assert!(fixed(false).iter().all(Vec::is_empty));
    }

    #[test]
    fn a_ranking_offers_its_group_or_else_its_best_sets() {
        let sets =
            |s: &[[&str; 2]]| s.iter().map(|p| p.iter().map(|w| w.to_string()).collect()).collect::<Vec<Vec<String>>>();
        let (single, groups) = ranked_offers(sets(&[["bad", "good"], ["poor", "good"], ["bad", "fine"]]), 1);
        assert!(single.is_empty());
        assert_eq!(groups, Some(vec![vec!["bad".to_string(), "poor".into()], vec!["good".into(), "fine".into()]]));
        // Every set shares the first label's word: no group, the best `keep` sets.
        let (single, groups) = ranked_offers(sets(&[["bad", "good"], ["bad", "fine"], ["bad", "nice"]]), 2);
        assert_eq!((single, groups), (sets(&[["bad", "good"], ["bad", "fine"]]), None));
    }

    #[test]
    fn the_named_cue_is_the_most_specific_one_the_prompt_uses() {
        let cues: Vec<String> = edits::CUES.iter().map(|c| c.to_string()).collect();
        assert_eq!(named_cue(&parse(EXAMPLE, None), &cues).as_deref(), Some("Sentiment:"));
        let news = "---\nreprompt.labels: [a, b]\n---\nWhat is the TOPIC of this article?\n{{text}}\nAnswer:\n";
        assert_eq!(named_cue(&parse(news, None), &cues).as_deref(), Some("Topic:"));
        let plain = "---\nreprompt.labels: [a, b]\n---\nIs this good? Reply yes or no.\n{{text}}\n";
        assert_eq!(named_cue(&parse(plain, None), &cues), None);
        // Front matter does not count, nor do parts of words.
        let front = "---\nname: sentiment\nreprompt.labels: [a, b]\n---\nSentimental? {{text}}\n";
        assert_eq!(named_cue(&parse(front, None), &cues), None);
        // A plural names the cue too.
        let topics = "---\nreprompt.labels: [a, b]\n---\nYou sort news articles into topics.\n{{text}}\n";
        assert_eq!(named_cue(&parse(topics, None), &cues).as_deref(), Some("Topic:"));
        let categories = "---\nreprompt.labels: [a, b]\n---\nThe categories are a and b.\n{{text}}\n";
        assert_eq!(named_cue(&parse(categories, None), &cues).as_deref(), Some("Category:"));
        let outputs = "---\nreprompt.labels: [a, b]\n---\nNo outputs but a or b.\n{{text}}\n";
        assert_eq!(named_cue(&parse(outputs, None), &cues).as_deref(), Some("Output:"));
        let classes = "---\nreprompt.labels: [a, b]\n---\nTwo classes, a and b.\n{{text}}\n";
        assert_eq!(named_cue(&parse(classes, None), &["Class:".to_string()]).as_deref(), Some("Class:"));
    }

    #[test]
    fn the_answer_context_is_the_cue_line_without_label_words() {
        let doc = parse("---\nreprompt.labels: [bad, good]\n---\nSay it.\nText: {{x}}\nIs it good or bad?\n", None);
        assert_eq!(answer_context(&doc), "Chat: is it <label> or <label>?");
        let cue = parse("---\nreprompt.format: plain\nreprompt.labels: [no, yes]\n---\nText: {{x}}\nSentiment:", None);
        assert_eq!(answer_context(&cue), "Plain: sentiment:");
    }
}
