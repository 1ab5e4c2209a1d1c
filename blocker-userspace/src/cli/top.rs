//! `blocker top`: rates from the pinned counters (read every second, no daemon
//! needed) and the top sources from the daemon's sampled events. On a terminal
//! a live view (ratatui) until `q`; otherwise one snapshot, one second long.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt::Write as _,
    io::IsTerminal as _,
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Result;
use blocker::{
    control::{client, protocol::StreamItem},
    dataplane::maps::{read_pinned_counters, Counters},
    events::{Event, EventFilter},
};
use blocker_common::counter;

/// How often the view is drawn again.
const REFRESH: Duration = Duration::from_secs(1);
/// The sampled events the source tables rank.
const EVENT_WINDOW: Duration = Duration::from_secs(10);
/// Rows of each ranked table.
const TOP_ROWS: usize = 10;

pub(crate) fn run(socket: &Path, pin_root: &Path, iface: Option<String>) -> Result<()> {
    blocker::dataplane::object::check_privileges()?;
    let interfaces = super::commands::interfaces_to_read(pin_root, iface)?;
    let mut top = Top::new(pin_root, interfaces, socket);
    if !std::io::stdout().is_terminal() {
        std::thread::sleep(REFRESH);
        top.refresh();
        print!("{}", top.view().text());
        return Ok(());
    }
    live(&mut top)
}

/// Counters of every interface at one moment.
struct Sample {
    at: Instant,
    counters: Vec<Result<Counters, String>>,
}

/// What the events thread reports.
enum Feed {
    Event(Box<Event>),
    /// Why there are no events (no daemon, events off, the stream ended).
    Unavailable(String),
}

struct Top {
    pin_root: PathBuf,
    interfaces: Vec<String>,
    previous: Sample,
    current: Sample,
    feed: mpsc::Receiver<Feed>,
    /// The sampled events of the last `EVENT_WINDOW`.
    events: VecDeque<(Instant, Box<Event>)>,
    events_note: Option<String>,
}

impl Top {
    fn new(pin_root: &Path, interfaces: Vec<String>, socket: &Path) -> Top {
        let (tx, feed) = mpsc::channel();
        let filter = EventFilter { iface: (interfaces.len() == 1).then(|| interfaces[0].clone()), list: None };
        let socket = socket.to_owned();
        // The stream blocks on the socket: a thread of its own, ended with the process.
        std::thread::spawn(move || follow_events(&socket, &filter, &tx));
        let first = sample(pin_root, &interfaces);
        Top {
            pin_root: pin_root.to_owned(),
            interfaces,
            previous: Sample { at: first.at, counters: first.counters.clone() },
            current: first,
            feed,
            events: VecDeque::new(),
            events_note: Some("waiting for the daemon's event stream".into()),
        }
    }

    /// A new sample of the counters, and the events that arrived since the last.
    fn refresh(&mut self) {
        let now = sample(&self.pin_root, &self.interfaces);
        self.previous = std::mem::replace(&mut self.current, now);
        while let Ok(item) = self.feed.try_recv() {
            match item {
                Feed::Event(e) => {
                    self.events_note = None;
                    self.events.push_back((Instant::now(), e));
                }
                Feed::Unavailable(why) => self.events_note = Some(why),
            }
        }
        while self.events.front().is_some_and(|(at, _)| at.elapsed() > EVENT_WINDOW) {
            self.events.pop_front();
        }
    }

    fn view(&self) -> View {
        let seconds = self.current.at.duration_since(self.previous.at).as_secs_f64().max(1e-3);
        let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
        let mut interfaces = Table::new(
            "Interfaces (packets per second)",
            &["interface", "mode", "attached", "dropped/s", "passed/s", "monitored/s", "dropped total"],
        );
        // Per list name: action, packets/s, bytes/s, packets in all.
        let mut lists: BTreeMap<String, (String, f64, f64, u64)> = BTreeMap::new();
        for ((name, now), before) in self.interfaces.iter().zip(&self.current.counters).zip(&self.previous.counters) {
            let (now, before) = match (now, before) {
                (Ok(n), Ok(b)) => (n, b),
                (Err(e), _) | (_, Err(e)) => {
                    interfaces.rows.push(vec![name.clone(), format!("unreadable: {e}")]);
                    continue;
                }
            };
            let g = |c: u32| rate(now.global(c), before.global(c));
            interfaces.rows.push(vec![
                name.clone(),
                now.mode.name().into(),
                match now.attached_here {
                    Some(false) => "NO".into(),
                    _ => "yes".into(),
                },
                number(g(counter::DROPPED)),
                number(g(counter::PASSED)),
                number(g(counter::MONITORED)),
                number(now.global(counter::DROPPED) as f64),
            ]);
            for l in now.lists.iter().filter(|l| l.live) {
                let was = before.lists.iter().find(|b| b.id == l.id && b.name == l.name && b.scope == l.scope);
                let (p, b) = was.map_or((0, 0), |w| (w.packets, w.bytes));
                // A list is its scope and name: the same name in two scopes is two lists.
                let shown = format!("{}{}", l.name, blocker::policy::scope_suffix(&l.scope));
                let entry =
                    lists.entry(shown).or_insert_with(|| (l.action.map_or("?", |a| a.name()).to_owned(), 0.0, 0.0, 0));
                entry.1 += rate(l.packets, p);
                entry.2 += rate(l.bytes, b);
                entry.3 += l.packets;
            }
        }
        let mut ranked: Vec<(String, (String, f64, f64, u64))> = lists.into_iter().collect();
        ranked.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1).then(b.1 .3.cmp(&a.1 .3)).then(a.0.cmp(&b.0)));
        let mut list_table =
            Table::new("Top lists and countries", &["list", "action", "packets/s", "bytes/s", "packets total"]);
        for (name, (action, pps, bps, total)) in ranked.into_iter().take(TOP_ROWS) {
            list_table.rows.push(vec![name, action, number(pps), number(bps), number(total as f64)]);
        }
        let window = EVENT_WINDOW.as_secs();
        let mut sources = Table::new(
            &format!("Top sources (sampled events, last {window} s)"),
            &["source", "events", "share", "list", "last seen as"],
        );
        let mut prefixes =
            Table::new(&format!("Top /24 and /48 (sampled events, last {window} s)"), &["prefix", "events", "share"]);
        let total = self.events.len();
        let mut by_source: HashMap<String, (usize, &Event)> = HashMap::new();
        let mut by_prefix: HashMap<String, usize> = HashMap::new();
        for (_, e) in &self.events {
            let entry = by_source.entry(e.source.to_string()).or_insert((0, e));
            entry.0 += 1;
            entry.1 = e;
            *by_prefix.entry(e.source_prefix()).or_insert(0) += 1;
        }
        let share = |n: usize| format!("{:.0}%", n as f64 * 100.0 / total.max(1) as f64);
        for (source, (n, e)) in top_counts(by_source, |v| v.0) {
            let l4 = e.dst_port.map_or(e.protocol_name.clone(), |p| format!("{}/{p}", e.protocol_name));
            let list = e.list.clone().unwrap_or_else(|| format!("id {}", e.list_id));
            sources.rows.push(vec![source, n.to_string(), share(n), list, format!("{} {l4}", e.verdict)]);
        }
        for (prefix, n) in top_counts(by_prefix, |v| *v) {
            prefixes.rows.push(vec![prefix, n.to_string(), share(n)]);
        }
        View {
            title: format!(
                "blocker top - {} - every {} s - q quits",
                blocker::clock::rfc3339_millis(std::time::SystemTime::now()),
                REFRESH.as_secs()
            ),
            tables: vec![interfaces, list_table, sources, prefixes],
            note: self.events_note.as_ref().map(|n| format!("events: {n}")),
        }
    }
}

/// The `TOP_ROWS` largest by `count`, largest first (ties by key).
fn top_counts<V>(map: HashMap<String, V>, count: impl Fn(&V) -> usize) -> Vec<(String, V)> {
    let mut v: Vec<(String, V)> = map.into_iter().collect();
    v.sort_by(|a, b| count(&b.1).cmp(&count(&a.1)).then(a.0.cmp(&b.0)));
    v.truncate(TOP_ROWS);
    v
}

fn sample(pin_root: &Path, interfaces: &[String]) -> Sample {
    let counters = interfaces.iter().map(|i| read_pinned_counters(pin_root, i).map_err(|e| e.to_string())).collect();
    Sample { at: Instant::now(), counters }
}

/// Streams the daemon's events into `tx`; says why when there are none.
fn follow_events(socket: &Path, filter: &EventFilter, tx: &mpsc::Sender<Feed>) {
    let stream = match client::events(socket, filter) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Feed::Unavailable(e.to_string()));
            return;
        }
    };
    for item in stream {
        let sent = match item {
            Ok(StreamItem::Event(e)) => tx.send(Feed::Event(e)),
            Ok(StreamItem::Missed { .. }) => Ok(()),
            Err(e) => tx.send(Feed::Unavailable(e.to_string())),
        };
        if sent.is_err() {
            return;
        }
    }
    let _ = tx.send(Feed::Unavailable("the daemon ended the event stream".into()));
}

/// A rate or count with thousands separators, no decimals.
fn number(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What one refresh shows: the same for the terminal view and the snapshot.
struct View {
    title: String,
    tables: Vec<Table>,
    note: Option<String>,
}

struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(title: &str, header: &[&str]) -> Table {
        Table { title: title.to_owned(), header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Each column's width: its widest cell.
    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(cell.chars().count());
                } else {
                    w.push(cell.chars().count());
                }
            }
        }
        w
    }
}

impl View {
    /// The snapshot printed when stdout is not a terminal.
    fn text(&self) -> String {
        let mut s = format!("{}\n", self.title);
        if let Some(note) = &self.note {
            let _ = writeln!(s, "{note}");
        }
        for t in &self.tables {
            let _ = writeln!(s, "\n{}", t.title);
            let widths = t.widths();
            let line = |cells: &[String]| {
                let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}", w = *w)).collect();
                format!("  {}", padded.join("  ").trim_end())
            };
            let _ = writeln!(s, "{}", line(&t.header));
            if t.rows.is_empty() {
                let _ = writeln!(s, "  (none)");
            }
            for row in &t.rows {
                let _ = writeln!(s, "{}", line(row));
            }
        }
        s
    }
}

/// The live view until `q` (or Esc, or Ctrl-C).
fn live(top: &mut Top) -> Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = live_loop(top, &mut terminal);
    ratatui::restore();
    result
}

fn live_loop(top: &mut Top, terminal: &mut ratatui::DefaultTerminal) -> Result<()> {
    use ratatui::crossterm::event::{self, Event as Input, KeyCode, KeyEventKind, KeyModifiers};
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            top.refresh();
            let view = top.view();
            terminal.draw(|frame| draw(frame, &view))?;
            next = Instant::now() + REFRESH;
        }
        if event::poll(next.saturating_duration_since(Instant::now()))? {
            match event::read()? {
                Input::Key(k) if k.kind == KeyEventKind::Press => match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                    _ => {}
                },
                // Drawn again at once in the new size.
                Input::Resize(..) => next = Instant::now(),
                _ => {}
            }
        }
    }
}

fn draw(frame: &mut ratatui::Frame<'_>, view: &View) {
    use ratatui::{
        layout::{Constraint, Layout},
        style::{Modifier, Style},
        text::Line,
        widgets::{Block, Paragraph, Row, Table as TableWidget},
    };
    let mut constraints = vec![Constraint::Length(u16::from(view.note.is_some()) + 1)];
    constraints.extend(view.tables.iter().map(|t| Constraint::Length(t.rows.len().max(1) as u16 + 3)));
    constraints.push(Constraint::Min(0));
    let areas = Layout::vertical(constraints).split(frame.area());
    let mut head = vec![Line::from(view.title.clone()).style(Style::new().add_modifier(Modifier::BOLD))];
    if let Some(note) = &view.note {
        head.push(Line::from(note.clone()));
    }
    frame.render_widget(Paragraph::new(head), areas[0]);
    for (t, area) in view.tables.iter().zip(areas.iter().skip(1)) {
        let widths: Vec<Constraint> = t.widths().iter().map(|w| Constraint::Length(*w as u16)).collect();
        let rows: Vec<Row<'_>> = t.rows.iter().map(|r| Row::new(r.iter().map(String::as_str))).collect();
        let widget = TableWidget::new(rows, widths)
            .header(Row::new(t.header.iter().map(String::as_str)).style(Style::new().add_modifier(Modifier::BOLD)))
            .column_spacing(2)
            .block(Block::bordered().title(t.title.as_str()));
        frame.render_widget(widget, *area);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_have_thousands_separators() {
        assert_eq!(number(0.4), "0");
        assert_eq!(number(999.0), "999");
        assert_eq!(number(1000.0), "1,000");
        assert_eq!(number(1_234_567.0), "1,234,567");
    }

    #[test]
    fn the_snapshot_text_pads_columns_and_says_when_a_table_is_empty() {
        let mut t = Table::new("Top", &["list", "packets/s"]);
        t.rows.push(vec!["country:CN".into(), "12".into()]);
        let empty = Table::new("Top sources", &["source"]);
        let view = View { title: "blocker top".into(), tables: vec![t, empty], note: Some("events: off".into()) };
        assert_eq!(
            view.text(),
            "blocker top\nevents: off\n\nTop\n  list        packets/s\n  country:CN  12\n\nTop sources\n  source\n  (none)\n"
        );
    }
}
