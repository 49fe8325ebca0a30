//! `--plot`: every request's latency against when it was due, as an SVG scatter plot. Stalls
//! show as columns, queueing as slopes.

use std::path::Path;

use plotters::prelude::*;

use crate::fire::Sample;

/// Whatever plotters reports (its errors are generic over the backend; their text is enough).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlotError(String);

fn failed(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

pub(crate) fn latency_over_time(path: &Path, samples: &[Sample]) -> Result<(), PlotError> {
    let max_t = samples.iter().map(|s| s.0).fold(0.001f32, f32::max);
    let max_ms = samples.iter().map(|s| s.1).fold(0.001f32, f32::max);
    let min_ms = samples.iter().map(|s| s.1).fold(max_ms, f32::min).max(0.001);
    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("seckill bench: latency of each request over time", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f32..max_t * 1.02, (min_ms / 1.5..max_ms * 1.5).log_scale())
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("latency (ms, log)")
        .draw()
        .map_err(failed)?;
    chart
        .draw_series(
            samples
                .iter()
                .map(|&(t, ms)| Circle::new((t, ms.max(min_ms)), 1, BLUE.mix(0.3).filled())),
        )
        .map_err(failed)?;
    root.present().map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_is_a_point() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("latency.svg");
        latency_over_time(&path, &[(0.0, 1.0), (0.5, 2.5), (1.0, 40.0)]).expect("plots");
        let svg = std::fs::read_to_string(&path).expect("written");
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 3);
    }

    #[test]
    fn an_unwritable_path_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing-dir").join("latency.svg");
        assert!(latency_over_time(&path, &[(0.0, 1.0)]).is_err());
    }
}
