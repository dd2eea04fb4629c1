//! The audit as a PNG chart (plotters): one panel per audited attribute,
//! a bar per group for its selection rate, the true-positive rate as a dot,
//! and lines at four-fifths of the most favoured rate and at the declared
//! minimum ratio.
//!
//! Text is drawn with plotters' `ab_glyph` renderer and a font compiled into
//! the binary (Ubuntu Light from `epaint_default_fonts`), so the chart needs
//! no system font or library.

use std::{path::Path, sync::Once};

use plotters::{
    coord::ranged1d::SegmentValue,
    prelude::*,
    style::{FontStyle, register_font},
};

use super::{AuditError, FOUR_FIFTHS, Report};

const FONT: &str = "sans-serif";
const PANEL: (u32, u32) = (640, 420);

fn register() {
    static FONT_ONCE: Once = Once::new();
    FONT_ONCE.call_once(|| {
        // The bytes are a known-good TrueType font; a failure here is a
        // build defect, and the chart would draw no text.
        if register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT).is_err() {
            tracing::error!("the bundled chart font does not parse");
        }
    });
}

/// Draws the chart of `report` to the PNG file `path`.
pub fn draw(report: &Report, path: &Path) -> Result<(), AuditError> {
    register();
    let err = |e: &dyn std::fmt::Display| AuditError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let panels = report.attributes.len().max(1) as u32;
    let root = BitMapBackend::new(path, (PANEL.0 * panels, PANEL.1)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    for (area, a) in root
        .split_evenly((1, panels as usize))
        .iter()
        .zip(&report.attributes)
    {
        let names: Vec<&str> = a.groups.iter().map(|g| g.group.as_str()).collect();
        let top = a
            .groups
            .iter()
            .flat_map(|g| [Some(g.rates.selection_rate), g.rates.true_positive_rate])
            .flatten()
            .fold(0.0f64, f64::max);
        // The lines are drawn from the groups compared: a group too small
        // to compare is no one's measure.
        let favoured = a
            .groups
            .iter()
            .filter(|g| g.compared)
            .map(|g| g.rates.selection_rate)
            .fold(0.0f64, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "{} {}: {}{}",
                    report.model,
                    report.version,
                    a.column,
                    if a.bands.is_some() {
                        " (bands an input)"
                    } else {
                        ""
                    }
                ),
                (FONT, 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(48)
            // An integer range holds its end: 0..n-1 is the n groups.
            .build_cartesian_2d(
                (0..names.len().saturating_sub(1)).into_segmented(),
                0.0..(top * 1.4).max(0.05),
            )
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("group (bar: selection rate, grey when too small to compare; dot: true-positive rate)")
            .y_desc("rate")
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => {
                    names.get(*i).map(|s| (*s).to_owned()).unwrap_or_default()
                }
                _ => String::new(),
            })
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 13))
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(a.groups.iter().enumerate().map(|(i, g)| {
                let colour = if !g.compared {
                    RGBColor(160, 160, 160).mix(0.6)
                } else if g
                    .disparate_impact
                    .is_none_or(|r| r < a.min_disparate_impact)
                {
                    RED.mix(0.7)
                } else if g.disparate_impact.is_some_and(|r| r < FOUR_FIFTHS) {
                    RGBColor(230, 150, 30).mix(0.8)
                } else {
                    BLUE.mix(0.6)
                };
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), g.rates.selection_rate),
                    ],
                    colour.filled(),
                );
                bar.set_margin(0, 0, 18, 18);
                bar
            }))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(a.groups.iter().enumerate().filter_map(|(i, g)| {
                g.rates
                    .true_positive_rate
                    .map(|t| Circle::new((SegmentValue::CenterOf(i), t), 5, BLACK.filled()))
            }))
            .map_err(|e| err(&e))?;
        for (ratio, colour, label) in [
            (FOUR_FIFTHS, RGBColor(230, 150, 30), "four-fifths"),
            (a.min_disparate_impact, RED, "declared minimum"),
        ] {
            let y = favoured * ratio;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(SegmentValue::Exact(0), y), (SegmentValue::Last, y)],
                    colour.stroke_width(2),
                )))
                .map_err(|e| err(&e))?
                .label(format!("{label} ({ratio}× most favoured)"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}
