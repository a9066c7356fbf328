"""What `genbench compare` is made of, one concern per module.

runs      find run folders (and a sweep's missing jobs), read each run's headline record, group runs into variants
events    TensorBoard scalars in the order they were written: one value per (tag, step), the last one written
stats     mean ± std over seeds, Welch's t-test and the smallest difference the seeds can resolve (scipy.stats)
verdicts  the four claims of the generative learning trilemma, each judged by a stated rule
crossings where two variants' FID-against-training-compute curves cross (training FLOPs and seconds)
nfe       FID against NFE from the records that re-score a run's weights with other samplers
writers   compare.csv, compare_runs.csv, crossings.csv, fid_vs_nfe.csv and compare.md
plots     the PNG figures, with short variant labels (A, B, ...) and their key
"""
