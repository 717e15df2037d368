#!/usr/bin/env bash
# The report of docs/TRAINING.md from the finished runs in the work folder (no training): every arm and variant.
# Variants spell out --normalize channel where they were made before conv-layer became the default (session 6);
# kmeans320cl and kmeansfc320cl were run as --init kmeans --num-images 320 [--data-driven-fc] when auto meant conv-layer for k-means on caffenet and vgg (session 7).
cd "$(dirname "$0")/../../.."
ORIG=${ORIG:?set ORIG to a snapshot of github philkr/magic_init}
OMP_NUM_THREADS=1 python3 bench/train_few_labels.py --report-only --nets small,caffenet,vgg --schedules short,long --original $ORIG --out docs/results/train_suite --judge ours-convlayer320 \
 --arms caffe-gaussian,caffe-xavier,caffe-msra,orig-kmeans,orig-elwise,ours-convlayer320,ours-channel,ours-kmeans-channel,ours-gaussian-tp,ours-pca-tp,ours-kmeans-tp,ours-kmeans-sd,ours-gaussian-n320,ours-gaussian-beta0,ours-kmeans-old,ours-kmeans-fcgauss,ours-kmeans-ratedrop,ours-kmeans-eps01,ours-kmeans-eps1,ours-gaussian-testrates,ours-layer,ours-convlayer,ours-kmeans320cl,ours-kmeans320ch,ours-kmeansfc320cl,ours-pca320ch \
 --variant gaussian-tp="--init gaussian --no-stats-dropout --normalize channel" \
 --variant pca-tp="--init pca --no-stats-dropout --normalize channel" \
 --variant kmeans-tp="--init kmeans --no-stats-dropout --normalize channel" \
 --variant kmeans-sd="--init kmeans --stats-dropout --normalize channel" \
 --variant gaussian-n320="--init gaussian --num-images 320 --normalize channel" \
 --variant gaussian-beta0="--init gaussian --beta 0 --normalize channel" \
 --variant kmeans-old="--init kmeans --data-driven-fc --no-rate-dropout --no-stats-dropout --normalize channel" \
 --variant kmeans-fcgauss="--init kmeans --no-rate-dropout --no-stats-dropout --normalize channel" \
 --variant kmeans-ratedrop="--init kmeans --data-driven-fc --no-stats-dropout --normalize channel" \
 --variant kmeans-eps01="--init kmeans --whitening-eps 0.1 --no-stats-dropout --normalize channel" \
 --variant kmeans-eps1="--init kmeans --whitening-eps 1 --no-stats-dropout --normalize channel" \
 --variant gaussian-testrates="--init gaussian --no-rate-dropout --no-stats-dropout --normalize channel" \
 --variant layer="--init gaussian --normalize layer" \
 --variant convlayer="--init gaussian --normalize conv-layer" \
 --variant convlayer320="--init gaussian --normalize conv-layer --num-images 320" \
 --variant channel="--init gaussian --normalize channel" \
 --variant kmeans-channel="--init kmeans --normalize channel" \
 --variant kmeans320cl="--init kmeans --num-images 320 --normalize conv-layer" \
 --variant kmeans320ch="--init kmeans --num-images 320 --normalize channel" \
 --variant kmeansfc320cl="--init kmeans --num-images 320 --data-driven-fc --normalize conv-layer" \
 --variant pca320ch="--init pca --num-images 320 --normalize channel"
