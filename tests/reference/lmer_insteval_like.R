# lmer's REML fit of the InstEval-shaped simulated data of benchmarks/bench_lmm.py:
# insteval_like() (deterministic; seed 0).  Regenerate the reference with
#   python -c "from benchmarks.bench_lmm import insteval_like; insteval_like().to_csv('d.csv', index=False)"
#   Rscript tests/reference/lmer_insteval_like.R d.csv > tests/reference/lmer_insteval_like.json
# ("seconds" is lmer's own fitting time on the 2-core development machine, under load.)
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
df <- read.csv(args[1], colClasses = c(s = "character", d = "character", dept = "character"))
t0 <- proc.time()[["elapsed"]]
m <- lmer(y ~ service + (1 | s) + (1 | d) + (1 | dept), df, REML = TRUE)
elapsed <- proc.time()[["elapsed"]] - t0
vc <- as.data.frame(VarCorr(m))
out <- list(
  software = paste("lme4", as.character(packageVersion("lme4")), "/", R.version.string),
  formula = "y ~ service + (1 | s) + (1 | d) + (1 | dept)",
  data = "benchmarks/bench_lmm.py: insteval_like() (seed 0, 73,000 rows)",
  method = "REML",
  nobs = nobs(m),
  reml_criterion = unname(REMLcrit(m)),
  theta = as.list(getME(m, "theta")),  # relative SDs, in lme4's term order
  sigma = sigma(m),
  fixef = as.list(fixef(m)),
  fixef_se = as.list(sqrt(diag(as.matrix(vcov(m))))),
  varcorr = lapply(seq_len(nrow(vc)), function(i) list(group = vc$grp[i], variance = vc$vcov[i])),
  optimizer = m@optinfo$optimizer,
  seconds = elapsed
)
cat(jsonlite::toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "\n")
