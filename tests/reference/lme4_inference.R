# lme4 / lmerTest figures for bayesglmm.inference (tests/inference/): likelihood-ratio tests
# (anova), Satterthwaite degrees of freedom (lmerTest) and profile confidence intervals
# (confint(method = "profile")) on sleepstudy and cbpp.  Regenerate with
#   Rscript tests/reference/lme4_inference.R /work/shared/data > tests/reference/lme4_inference.json
suppressMessages({library(lme4); library(lmerTest); library(jsonlite)})
dir <- commandArgs(trailingOnly = TRUE)[1]
sleep <- read.csv(file.path(dir, "sleepstudy.csv"), colClasses = c(Subject = "factor"))
cbpp <- read.csv(file.path(dir, "cbpp.csv"), colClasses = c(herd = "factor", period = "factor"))
tab <- function(a) {  # an anova table as a list of columns (NA -> null)
  d <- as.data.frame(a)
  out <- lapply(d, function(v) unname(as.numeric(v)))
  out$model <- rownames(d)
  out
}
ci <- function(x) {
  x <- as.matrix(x)
  list(names = rownames(x), lower = unname(x[, 1]), upper = unname(x[, 2]))
}
ctl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 2e-4, rhoend = 2e-11))

# ---- likelihood-ratio tests: anova refits REML fits by ML
m00 <- lme4::lmer(Reaction ~ 1 + (1 | Subject), sleep, control = ctl)
m0 <- lme4::lmer(Reaction ~ Days + (1 | Subject), sleep, control = ctl)
m1 <- lme4::lmer(Reaction ~ Days + (Days | Subject), sleep, control = ctl)
gctl <- glmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 2e-4, rhoend = 2e-11))
g0 <- glmer(cbind(incidence, size - incidence) ~ 1 + (1 | herd), cbpp, binomial, control = gctl)
g1 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial,
            control = gctl)
anovas <- list(
  sleep_m0_m1 = tab(suppressMessages(anova(m0, m1))),
  sleep_m00_m0_m1 = tab(suppressMessages(anova(m00, m0, m1))),
  cbpp_g0_g1 = tab(anova(g0, g1))
)

# ---- Satterthwaite (lmerTest) for the REML and ML fits
satt <- function(fit) {
  co <- summary(fit, ddf = "Satterthwaite")$coefficients
  list(names = rownames(co), estimate = unname(co[, 1]), se = unname(co[, 2]),
       df = unname(co[, 3]), t = unname(co[, 4]), p = unname(co[, 5]))
}
l1 <- lmerTest::lmer(Reaction ~ Days + (Days | Subject), sleep, control = ctl)
l0 <- lmerTest::lmer(Reaction ~ Days + (1 | Subject), sleep, control = ctl)
l1ml <- lmerTest::lmer(Reaction ~ Days + (Days | Subject), sleep, REML = FALSE, control = ctl)
satterthwaite <- list(sleep_slope_reml = satt(l1), sleep_intercept_reml = satt(l0),
                      sleep_slope_ml = satt(l1ml))

# ---- profile confidence intervals (lme4 profiles the ML deviance; spline-interpolated)
profile_ci <- list(
  sleep_slope = ci(confint(m1, method = "profile", oldNames = FALSE)),
  sleep_intercept = ci(confint(m0, method = "profile", oldNames = FALSE)),
  cbpp = ci(confint(g1, method = "profile", oldNames = FALSE))
)
cat(toJSON(list(software = paste("lme4", packageVersion("lme4"), "lmerTest",
                                 packageVersion("lmerTest")),
                anova = anovas, satterthwaite = satterthwaite, profile_ci = profile_ci),
           digits = NA, auto_unbox = TRUE, na = "null", pretty = TRUE))
cat("\n")
