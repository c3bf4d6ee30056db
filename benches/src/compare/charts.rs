//! SVG charts of the ratios, drawn with `plotters` (SVG backend only: the
//! text is SVG `<text>`, so no font files are needed).
//!
//! A chart has one group of horizontal bars per workload and one bar per
//! allocator. Each bar starts at 1 (the reference allocator) on a
//! logarithmic axis, so a bar to the left means less time or memory than
//! the reference and one to the right means more, and 0.5 and 2 sit the
//! same distance from 1.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The colour of an allocator's bars: Strata stands out, the others are
/// distinct and muted.
fn colour(allocator: &str, index: usize) -> RGBColor {
    match allocator {
        "strata" => RGBColor(214, 96, 0),
        "strata-huge" => RGBColor(240, 170, 90),
        "glibc" | "system" => RGBColor(120, 120, 120),
        "jemalloc" => RGBColor(49, 110, 180),
        "tcmalloc" => RGBColor(60, 150, 80),
        "mimalloc" => RGBColor(140, 90, 170),
        "mimalloc-small" => RGBColor(190, 160, 215),
        _ => {
            let (r, g, b) = Palette99::pick(index).to_rgba().rgb();
            RGBColor(r, g, b)
        }
    }
}

/// A chart to draw.
pub struct RatioChart<'a> {
    /// The title at the top.
    pub title: &'a str,
    /// The caption of the horizontal axis.
    pub axis: &'a str,
    /// The workloads, one group of bars each, top to bottom.
    pub groups: &'a [String],
    /// The allocators, one bar per group each, with the legend's names.
    pub allocators: &'a [String],
    /// `values[group][allocator]`: the ratio, or `None` when not measured.
    pub values: &'a [Vec<Option<f64>>],
    /// `notes[group][allocator]`: a note shown in brackets after the bar's
    /// value (`1.05 (7/9)`); an empty slice, or a missing entry, for none.
    pub notes: &'a [Vec<String>],
}

/// Ticks for a log axis from `low` to `high`: 1 and the usual steps
/// around it.
fn ticks(low: f64, high: f64) -> Vec<f64> {
    const STEPS: [f64; 19] = [
        0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0,
        100.0, 200.0, 500.0,
    ];
    let inside: Vec<f64> = STEPS
        .into_iter()
        .filter(|&t| t >= low && t <= high)
        .collect();
    // Too many ticks crowd the axis: keep 1 and every other one around it.
    if inside.len() > 9 {
        let one = inside.iter().position(|&t| t == 1.0).unwrap_or(0);
        inside
            .iter()
            .enumerate()
            .filter(|(i, _)| (*i as isize - one as isize) % 2 == 0)
            .map(|(_, &t)| t)
            .collect()
    } else {
        inside
    }
}

impl RatioChart<'_> {
    /// Draws the chart into an SVG file at `path`.
    pub fn write_svg(&self, path: &Path) -> Result<(), String> {
        let bar_height = 16u32;
        let group_height = bar_height * self.allocators.len().max(1) as u32 + 14;
        let height = 170 + group_height * self.groups.len().max(1) as u32;
        let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
        self.draw(&root)
            .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        root.present()
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let (header, body) = root.split_vertically(76);
        self.draw_header(&header)?;
        let present = self.values.iter().flatten().flatten().copied();
        let (low, high) = present.fold((1.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (low, high) = (low / 1.3, high * 1.3);
        let groups = self.groups.len().max(1);
        let mut chart = ChartBuilder::on(&body)
            .margin(16)
            .margin_top(4)
            .x_label_area_size(50)
            .y_label_area_size(130)
            .build_cartesian_2d(
                (low..high).log_scale().with_key_points(ticks(low, high)),
                0.0..groups as f64,
            )?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(self.axis)
            .x_label_formatter(&|v| format!("{v}"))
            .y_labels(0)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;

        let bars = self.allocators.len().max(1) as f64;
        let slot = 0.84 / bars;
        for (a, allocator) in self.allocators.iter().enumerate() {
            let fill = colour(allocator, a);
            let mut rectangles = Vec::new();
            let mut labels = Vec::new();
            for (g, row) in self.values.iter().enumerate() {
                let Some(value) = row.get(a).copied().flatten() else {
                    continue;
                };
                let top = (groups - g) as f64 - 0.08 - slot * a as f64;
                let bottom = top - slot * 0.88;
                rectangles.push(Rectangle::new([(1.0, top), (value, bottom)], fill.filled()));
                let (anchor, x) = if value >= 1.0 {
                    (HPos::Left, value * 1.015)
                } else {
                    (HPos::Right, value / 1.015)
                };
                let style = TextStyle::from(("sans-serif", 12).into_font())
                    .color(&BLACK)
                    .pos(Pos::new(anchor, VPos::Center));
                let label = match self.notes.get(g).and_then(|row| row.get(a)) {
                    Some(note) if !note.is_empty() => format!("{value:.2} ({note})"),
                    _ => format!("{value:.2}"),
                };
                labels.push(Text::new(label, (x, (top + bottom) / 2.0), style));
            }
            chart.draw_series(rectangles)?;
            chart.draw_series(labels)?;
        }
        // The workload names, left of the axis: group g (from the top)
        // spans y in [groups-1-g, groups-g).
        let name_style = TextStyle::from(("sans-serif", 15).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        for (g, name) in self.groups.iter().enumerate() {
            let (_, y) = chart.backend_coord(&(low, (groups - g) as f64 - 0.5));
            let (x, _) = chart.backend_coord(&(low, 0.0));
            // backend_coord gives pixels of the whole image, as `root` takes them.
            root.draw(&Text::new(name.as_str(), (x - 10, y), name_style.clone()))?;
        }
        // Light rules between the groups.
        let rule = RGBColor(200, 200, 200);
        for g in 1..groups {
            chart.draw_series(LineSeries::new(
                [(low, g as f64), (high, g as f64)],
                rule.stroke_width(1),
            ))?;
        }
        // The reference: a line at 1.
        chart.draw_series(LineSeries::new(
            [(1.0, 0.0), (1.0, groups as f64)],
            BLACK.stroke_width(2),
        ))?;
        Ok(())
    }

    /// The title, and under it the legend in one row.
    fn draw_header<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let (width, _) = area.dim_in_pixel();
        let centre = Pos::new(HPos::Center, VPos::Center);
        let title = TextStyle::from(("sans-serif", 22).into_font())
            .color(&BLACK)
            .pos(centre);
        area.draw(&Text::new(self.title, (width as i32 / 2, 20), title))?;
        let entry_width = 130;
        let mut x = width as i32 / 2 - entry_width * self.allocators.len() as i32 / 2;
        let label = TextStyle::from(("sans-serif", 16).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (a, allocator) in self.allocators.iter().enumerate() {
            let fill = colour(allocator, a);
            area.draw(&Rectangle::new([(x, 46), (x + 16, 62)], fill.filled()))?;
            area.draw(&Text::new(allocator.as_str(), (x + 22, 54), label.clone()))?;
            x += entry_width;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_include_one_and_stay_in_range() {
        let t = ticks(0.4, 3.5);
        assert!(t.contains(&1.0));
        assert!(t.iter().all(|&v| (0.4..=3.5).contains(&v)));
        let wide = ticks(0.01, 500.0);
        assert!(wide.contains(&1.0) && wide.len() <= 10, "{wide:?}");
    }
}
