#!/bin/bash
# GRU variants of the TOFU baselines: unlearn, then evaluate, as the other
# community methods do. Run from the repository root.

export MASTER_PORT=$(python -c "import socket; s=socket.socket(); s.bind(('', 0)); print(s.getsockname()[1]); s.close()")

########################################################################################################################
########################################### Final best parameters #####################################################
########################################################################################################################

models=(
    "Llama-3.2-1B-Instruct"
)
trainers=(
$trainers
)
forget_retain_splits=(
    "forget10 retain90"
    "forget05 retain95"
    "forget01 retain99"
)
per_device_train_batch_size=4
gradient_accumulation_steps=4

for split in "${forget_retain_splits[@]}"; do
    forget_split=$(echo $split | cut -d' ' -f1)
    retain_split=$(echo $split | cut -d' ' -f2)
    for model in "${models[@]}"; do
        for trainer in "${trainers[@]}"; do
            task_name=tofu_${model}_${forget_split}_${trainer}
            model_path=open-unlearning/tofu_${model}_full
            echo ${task_name}: Unlearning ${model_path} using ${trainer}

            CUDA_VISIBLE_DEVICES=0 \
            python src/train.py --config-name=unlearn.yaml \
            experiment=unlearn/tofu/default \
            trainer=${trainer} \
            task_name=${task_name} \
            model=${model} \
            forget_split=${forget_split} \
            retain_split=${retain_split} \
            model.model_args.pretrained_model_name_or_path=${model_path} \
            retain_logs_path=saves/eval/tofu_${model}_${retain_split}/TOFU_EVAL.json \
            trainer.args.per_device_train_batch_size=$per_device_train_batch_size \
            trainer.args.gradient_accumulation_steps=$gradient_accumulation_steps

            CUDA_VISIBLE_DEVICES=0 \
            python src/eval.py \
            experiment=eval/tofu/default.yaml \
            forget_split=${forget_split} \
            model=${model} \
            task_name=${task_name} \
            model.model_args.pretrained_model_name_or_path=saves/unlearn/${task_name} \
            paths.output_dir=saves/unlearn/${task_name}/evals \
            retain_logs_path=saves/eval/tofu_${model}_${retain_split}/TOFU_EVAL.json
        done
    done
done
