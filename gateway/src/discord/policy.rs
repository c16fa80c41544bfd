//! The Discord adapter's decisions, kept free of serenity so they can be tested alone:
//! which messages get an answer, the per-user token bucket, the global admission limit on
//! the `turns` queue depth, replayed message ids, and channels where the bot may not post.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

use super::text::{mentions, strip_mention};

/// What the decision needs to know about one incoming message.
#[derive(Debug, Clone)]
pub struct Incoming<'a> {
    pub author_id: u64,
    pub author_is_bot: bool,
    /// No guild: a direct message to the bot.
    pub is_dm: bool,
    /// Ids in the message's `mentions`.
    pub mentions: &'a [u64],
    /// Author of the message this one replies to, if it is a reply.
    pub replied_to_author: Option<u64>,
    /// A user's message (`Regular` or `InlineReply`), not a join, pin or thread notice.
    pub is_user_message: bool,
    pub content: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressed {
    Dm,
    Mention,
    ReplyToBot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    FromItself,
    /// Bots (and webhooks) are never answered: two bots answering each other loop forever.
    FromBot,
    SystemMessage,
    NotAddressed,
    /// Nothing left once the mention is taken out (an image alone, a bare mention).
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer `text` (the content without the bot's mention).
    Answer {
        text: String,
        why: Addressed,
    },
    Ignore(Ignored),
}

/// Answer DMs, mentions of the bot and replies to the bot's own messages; nothing else.
pub fn decide(m: &Incoming<'_>, bot_id: u64) -> Decision {
    if m.author_id == bot_id {
        return Decision::Ignore(Ignored::FromItself);
    }
    if m.author_is_bot {
        return Decision::Ignore(Ignored::FromBot);
    }
    if !m.is_user_message {
        return Decision::Ignore(Ignored::SystemMessage);
    }
    let why = if m.is_dm {
        Addressed::Dm
    } else if m.mentions.contains(&bot_id) || mentions(m.content, bot_id) {
        Addressed::Mention
    } else if m.replied_to_author == Some(bot_id) {
        Addressed::ReplyToBot
    } else {
        return Decision::Ignore(Ignored::NotAddressed);
    };
    let text = strip_mention(m.content, bot_id);
    if text.is_empty() {
        return Decision::Ignore(Ignored::Empty);
    }
    Decision::Answer { text, why }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// Over the limit: nothing is published. `tell_user` is true once per window per user,
    /// so a user (or a script) hammering the bot gets one answer, not one per message.
    Limited {
        retry_after: Duration,
        tell_user: bool,
    },
}

/// Per-user token bucket: `turns` tokens, refilled evenly over `window`. Time is passed in,
/// so tests need no clock.
#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    window: Duration,
    users: HashMap<u64, Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    told_at: Option<Instant>,
}

/// Above this many tracked users, users with a full bucket (nothing to remember) are dropped.
const MAX_TRACKED_USERS: usize = 50_000;

impl RateLimiter {
    pub fn new(turns: u32, window: Duration) -> Self {
        Self {
            capacity: f64::from(turns.max(1)),
            window: window.max(Duration::from_millis(1)),
            users: HashMap::new(),
        }
    }

    fn per_token(&self) -> Duration {
        self.window.div_f64(self.capacity)
    }

    pub fn check(&mut self, user: u64, now: Instant) -> RateDecision {
        if self.users.len() >= MAX_TRACKED_USERS {
            let (capacity, per_token) = (self.capacity, self.per_token());
            self.users.retain(|_, b| {
                let refilled = b.tokens
                    + now.saturating_duration_since(b.updated).as_secs_f64()
                        / per_token.as_secs_f64();
                refilled < capacity
            });
        }
        let (capacity, per_token, window) = (self.capacity, self.per_token(), self.window);
        let bucket = self.users.entry(user).or_insert(Bucket {
            tokens: capacity,
            updated: now,
            told_at: None,
        });
        let elapsed = now.saturating_duration_since(bucket.updated);
        bucket.tokens =
            (bucket.tokens + elapsed.as_secs_f64() / per_token.as_secs_f64()).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return RateDecision::Allowed;
        }
        let retry_after = per_token.mul_f64(1.0 - bucket.tokens);
        let tell_user = bucket
            .told_at
            .is_none_or(|t| now.saturating_duration_since(t) >= window);
        if tell_user {
            bucket.told_at = Some(now);
        }
        RateDecision::Limited {
            retry_after,
            tell_user,
        }
    }
}

/// Global admission: while the `turns` queue holds more than `limit` ready turns, new
/// messages are answered "busy" instead of queued behind a backlog they would time out in.
/// The depth is sampled at most once per `every`, not per message (one passive declare per
/// second is nothing for RabbitMQ; one per message would be).
pub struct Admission {
    limit: u64,
    every: Duration,
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Option<u64>)>>,
}

impl Admission {
    /// `limit` 0 turns the check off.
    pub fn new(limit: u64, every: Duration) -> Self {
        Self {
            limit,
            every,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// `Some(position)` (the ready turns ahead plus this one) when the queue is over the
    /// limit. `sample` reads the depth; `None` from it (broker trouble) admits: the submit
    /// then reports the broker's state more precisely than a guess here could.
    pub async fn position<F, Fut>(&self, sample: F) -> Option<u64>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<u64>>,
    {
        if self.limit == 0 {
            return None;
        }
        // Held across the sample: concurrent messages wait for one sample instead of each
        // taking their own.
        let mut last = self.last.lock().await;
        let depth = match *last {
            Some((at, depth)) if at.elapsed() < self.every => depth,
            _ => {
                let depth = sample().await;
                *last = Some((tokio::time::Instant::now(), depth));
                depth
            }
        };
        depth.filter(|d| *d > self.limit).map(|d| d + 1)
    }
}

/// Message ids already handled, bounded (oldest forgotten first): a gateway RESUME replays
/// the events missed while disconnected, and a replayed message must not become a second
/// turn.
#[derive(Debug)]
pub struct RecentIds {
    capacity: usize,
    seen: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// True the first time an id is seen.
    pub fn first_time(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

/// Channels that answered 403 (no permission to post, or a user who blocks DMs): skipped for
/// a while instead of collecting an invalid request per message there. Discord bans a bot
/// after 10,000 invalid requests in 10 minutes; an active channel the bot cannot write to
/// would otherwise get it there.
#[derive(Debug)]
pub struct ForbiddenChannels {
    ttl: Duration,
    until: HashMap<u64, Instant>,
}

impl ForbiddenChannels {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            until: HashMap::new(),
        }
    }

    pub fn mark(&mut self, channel: u64, now: Instant) {
        self.until.retain(|_, until| *until > now);
        self.until.insert(channel, now + self.ttl);
    }

    pub fn is_forbidden(&self, channel: u64, now: Instant) -> bool {
        self.until.get(&channel).is_some_and(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const BOT: u64 = 42;
    const USER: u64 = 7;

    fn msg(content: &str) -> Incoming<'_> {
        Incoming {
            author_id: USER,
            author_is_bot: false,
            is_dm: false,
            mentions: &[],
            replied_to_author: None,
            is_user_message: true,
            content,
        }
    }

    fn answer(text: &str, why: Addressed) -> Decision {
        Decision::Answer {
            text: text.into(),
            why,
        }
    }

    #[test]
    fn answers_dms_mentions_and_replies_to_itself() {
        let dm = Incoming {
            is_dm: true,
            ..msg("hello")
        };
        assert_eq!(decide(&dm, BOT), answer("hello", Addressed::Dm));
        let mention = Incoming {
            mentions: &[BOT],
            ..msg("<@42> hello")
        };
        assert_eq!(decide(&mention, BOT), answer("hello", Addressed::Mention));
        // The mention in the text alone is enough (nickname form too).
        assert_eq!(
            decide(&msg("<@!42> hi there"), BOT),
            answer("hi there", Addressed::Mention)
        );
        let reply = Incoming {
            replied_to_author: Some(BOT),
            ..msg("and then?")
        };
        assert_eq!(
            decide(&reply, BOT),
            answer("and then?", Addressed::ReplyToBot)
        );
    }

    #[test]
    fn ignores_bots_itself_system_messages_empty_and_other_talk() {
        let own = Incoming {
            author_id: BOT,
            is_dm: true,
            ..msg("my own words")
        };
        assert_eq!(decide(&own, BOT), Decision::Ignore(Ignored::FromItself));
        let bot = Incoming {
            author_is_bot: true,
            mentions: &[BOT],
            ..msg("<@42> hi")
        };
        assert_eq!(decide(&bot, BOT), Decision::Ignore(Ignored::FromBot));
        let system = Incoming {
            is_user_message: false,
            is_dm: true,
            ..msg("pinned a message")
        };
        assert_eq!(
            decide(&system, BOT),
            Decision::Ignore(Ignored::SystemMessage)
        );
        assert_eq!(
            decide(&msg("just chatting"), BOT),
            Decision::Ignore(Ignored::NotAddressed)
        );
        let other = Incoming {
            mentions: &[99],
            replied_to_author: Some(99),
            ..msg("<@99> hi")
        };
        assert_eq!(decide(&other, BOT), Decision::Ignore(Ignored::NotAddressed));
        let bare = Incoming {
            mentions: &[BOT],
            ..msg("<@42>  ")
        };
        assert_eq!(decide(&bare, BOT), Decision::Ignore(Ignored::Empty));
        let image_only = Incoming {
            is_dm: true,
            ..msg("")
        };
        assert_eq!(decide(&image_only, BOT), Decision::Ignore(Ignored::Empty));
    }

    proptest::proptest! {
        #[test]
        fn any_message_is_answered_or_ignored_never_a_panic(
            content in "(<@!?42>|<@|>|[ ,:.!?]|[a-z]{1,5}|é|😀|\\s){0,40}",
            is_dm in proptest::bool::ANY,
            mentions_bot in proptest::bool::ANY,
        ) {
            let m = Incoming {
                is_dm,
                mentions: if mentions_bot { &[BOT] } else { &[] },
                ..msg(&content)
            };
            if let Decision::Answer { text, .. } = decide(&m, BOT) {
                proptest::prop_assert!(!text.is_empty());
                proptest::prop_assert_eq!(text.trim(), text.as_str());
            }
        }
    }

    #[test]
    fn token_bucket_limits_refills_and_tells_once_per_window() {
        let mut rl = RateLimiter::new(5, Duration::from_secs(30));
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(rl.check(USER, t0), RateDecision::Allowed);
        }
        let RateDecision::Limited {
            retry_after,
            tell_user,
        } = rl.check(USER, t0)
        else {
            panic!("sixth turn in the window must be limited");
        };
        assert!(tell_user);
        assert_eq!(retry_after, Duration::from_secs(6));
        // Told once; the next over-limit messages in the window are not answered.
        let again = rl.check(USER, t0 + Duration::from_secs(1));
        assert!(matches!(
            again,
            RateDecision::Limited {
                tell_user: false,
                ..
            }
        ));
        if let RateDecision::Limited { retry_after, .. } = again {
            assert_eq!(retry_after, Duration::from_secs(5));
        }
        // Other users have their own bucket.
        assert_eq!(rl.check(USER + 1, t0), RateDecision::Allowed);
        // One token back after 6 s, then limited again.
        let t6 = t0 + Duration::from_secs(6);
        assert_eq!(rl.check(USER, t6), RateDecision::Allowed);
        assert!(matches!(rl.check(USER, t6), RateDecision::Limited { .. }));
        // After a full window the bucket is full again, and a new warning may be given.
        let t40 = t0 + Duration::from_secs(40);
        for _ in 0..5 {
            assert_eq!(rl.check(USER, t40), RateDecision::Allowed);
        }
        assert!(matches!(
            rl.check(USER, t40),
            RateDecision::Limited {
                tell_user: true,
                ..
            }
        ));
    }

    #[test]
    fn idle_users_are_forgotten_when_many_are_tracked() {
        let mut rl = RateLimiter::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        for user in 0..MAX_TRACKED_USERS as u64 {
            rl.check(user, t0);
        }
        rl.check(u64::MAX, t0 + Duration::from_secs(5));
        assert_eq!(rl.users.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn admission_samples_at_most_once_per_interval() {
        let calls = Arc::new(AtomicUsize::new(0));
        let every = Duration::from_millis(200);
        let admission = Admission::new(100, every);
        let sample = |depth: u64| {
            let calls = calls.clone();
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Some(depth)
            }
        };
        assert_eq!(admission.position(sample(150)).await, Some(151));
        // Within the interval the old sample holds, whatever the queue does.
        assert_eq!(admission.position(sample(0)).await, Some(151));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(every + Duration::from_millis(20)).await;
        assert_eq!(admission.position(sample(100)).await, None);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // An unknown depth admits.
        tokio::time::sleep(every + Duration::from_millis(20)).await;
        assert_eq!(admission.position(|| async { None }).await, None);
        // Limit 0 is off: no sampling at all.
        let off = Admission::new(0, every);
        assert_eq!(off.position(sample(1_000_000)).await, None);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn recent_ids_drop_replays_and_stay_bounded() {
        let mut ids = RecentIds::new(3);
        assert!(ids.first_time(1));
        assert!(!ids.first_time(1));
        for id in 2..=4 {
            assert!(ids.first_time(id));
        }
        assert_eq!(ids.seen.len(), 3);
        assert!(ids.first_time(1), "the oldest id was forgotten");
    }

    #[test]
    fn forbidden_channels_expire() {
        let mut f = ForbiddenChannels::new(Duration::from_secs(600));
        let t0 = Instant::now();
        f.mark(5, t0);
        assert!(f.is_forbidden(5, t0 + Duration::from_secs(1)));
        assert!(!f.is_forbidden(6, t0));
        assert!(!f.is_forbidden(5, t0 + Duration::from_secs(601)));
    }
}
