//! A model server: an actor loads a model once (here a naive-Bayes sentiment model trained in
//! its constructor from `examples/data/sentiment.tsv`) and serves concurrent `predict` calls
//! from several client tasks. Prints the predictions for a few sentences and the throughput.
//!
//! `cargo run --release --example model_server`

use ray::{ActorHandle, ObjectRef};
use std::collections::HashMap;
use std::time::Instant;

const TRAINING_DATA: &str = include_str!("data/sentiment.tsv");

#[ray::actor]
pub struct SentimentModel {
    /// log P(word | positive) - log P(word | negative), per word.
    weights: HashMap<String, f64>,
    prior: f64,
    served: std::sync::atomic::AtomicU64,
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

#[ray::actor]
impl SentimentModel {
    /// Trains the model: word counts per class with Laplace smoothing.
    pub fn new(data: String) -> Result<Self, String> {
        let mut counts: [HashMap<String, f64>; 2] = Default::default();
        let mut docs = [0.0f64; 2];
        for line in data
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (label, text) = line
                .split_once('\t')
                .ok_or_else(|| format!("malformed training line: {line}"))?;
            let class = match label {
                "pos" => 0,
                "neg" => 1,
                other => return Err(format!("unknown label {other}")),
            };
            docs[class] += 1.0;
            for w in words(text) {
                *counts[class].entry(w).or_default() += 1.0;
            }
        }
        let vocabulary: std::collections::HashSet<&String> =
            counts[0].keys().chain(counts[1].keys()).collect();
        let totals = [
            counts[0].values().sum::<f64>(),
            counts[1].values().sum::<f64>(),
        ];
        let v = vocabulary.len() as f64;
        let weights = vocabulary
            .into_iter()
            .map(|w| {
                let p = (counts[0].get(w).copied().unwrap_or(0.0) + 1.0) / (totals[0] + v);
                let n = (counts[1].get(w).copied().unwrap_or(0.0) + 1.0) / (totals[1] + v);
                (w.clone(), p.ln() - n.ln())
            })
            .collect();
        Ok(SentimentModel {
            weights,
            prior: (docs[0] / docs[1]).ln(),
            served: Default::default(),
        })
    }

    /// The probability that `text` is positive.
    pub fn predict(&self, text: String) -> f64 {
        self.served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let score: f64 = self.prior
            + words(&text)
                .filter_map(|w| self.weights.get(&w))
                .sum::<f64>();
        1.0 / (1.0 + (-score).exp())
    }

    pub fn served(&self) -> u64 {
        self.served.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A client: sends `n` requests, 100 in flight at a time; returns how many were positive.
#[ray::remote]
fn client(model: ActorHandle<SentimentModel>, id: u32, n: u32) -> u32 {
    let phrases = [
        "friendly staff and fast delivery",
        "slow rude and noisy",
        "a clever moving film",
    ];
    let mut positive = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let refs: Vec<ObjectRef<f64>> = chunk
            .iter()
            .map(|i| model.predict(phrases[((i + id) % 3) as usize].to_string()))
            .collect();
        positive += ray::get_all(&refs)
            .unwrap()
            .iter()
            .filter(|p| **p > 0.5)
            .count() as u32;
    }
    positive
}

fn main() -> ray::Result<()> {
    ray::init(ray::Config::from_env())?;
    let model = SentimentModel::options()
        .name("sentiment")
        .max_concurrency(4)
        .remote(TRAINING_DATA.to_string());
    for text in [
        "the staff were friendly and helpful",
        "cold food and a rude waiter",
    ] {
        println!(
            "{text:?} -> P(positive) = {:.3}",
            ray::get(&model.predict(text.to_string()))?
        );
    }
    let (clients, per_client) = (4u32, 5_000u32);
    let start = Instant::now();
    let runs: Vec<ObjectRef<u32>> = (0..clients)
        .map(|id| client::remote(model.clone(), id, per_client))
        .collect();
    let positives: u32 = ray::get_all(&runs)?.into_iter().sum();
    let secs = start.elapsed().as_secs_f64();
    let total = clients * per_client;
    println!(
        "{total} predictions from {clients} client tasks in {secs:.3} s: {:.0} predictions/s ({positives} positive)",
        total as f64 / secs
    );
    let served = ray::get(&model.served())?;
    println!("the model served {served} requests");
    assert_eq!(served, u64::from(total) + 2);
    ray::shutdown();
    Ok(())
}
