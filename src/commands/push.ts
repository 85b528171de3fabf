import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base.js'
import {PushRenderer} from '../cli/push-progress.js'
import {bytes, table} from '../cli/render.js'
import {push, type PushResult} from '../hub/push.js'

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`

export default class Push extends BaseCommand {
  static override summary = 'Upload a converted model folder to the Hugging Face Hub in one commit, with a generated model card.'
  static override examples = [
    '<%= config.bin %> push ./OpenELM-270M-mlx-4bit --repo me/OpenELM-270M-mlx-4bit',
    '<%= config.bin %> push ./out --repo me/OpenELM-270M --revision fp16 --create-pr',
    '<%= config.bin %> push ./out --repo me/OpenELM-270M --dry-run',
  ]
  static override args = {dir: Args.string({description: 'model folder to upload (with a generated card), or one file (e.g. model.gguf: uploaded under its name, as `hf upload` does)', required: true})}
  static override flags = {
    repo: Flags.string({description: 'target repo, OWNER/NAME (created when missing)', required: true}),
    token: Flags.string({description: 'Hub token (default: HF_TOKEN, then $HF_TOKEN_PATH or $HF_HOME/token)'}),
    endpoint: Flags.string({description: 'Hub URL (default: HF_ENDPOINT, then https://huggingface.co)'}),
    revision: Flags.string({description: 'branch to commit to (created from main when missing)'}),
    'create-pr': Flags.boolean({description: 'open a pull request instead of committing to the branch', default: false}),
    private: Flags.boolean({description: 'make the repo private when it is created', default: false}),
    'commit-message': Flags.string({char: 'm', description: 'commit title'}),
    include: Flags.string({description: 'only upload paths matching this glob (repeatable)', multiple: true, multipleNonGreedy: true}),
    exclude: Flags.string({description: 'skip paths matching this glob (repeatable)', multiple: true, multipleNonGreedy: true}),
    'dry-run': Flags.boolean({description: 'list what would be uploaded (size, LFS or not) and send nothing', default: false}),
    'base-model': Flags.string({description: 'base_model for the generated model card (default: the Apple repo only when the weights have a released shape and the folder names that repo)'}),
    delete: Flags.string({description: 'delete remote files matching this glob in the same commit (repeatable)', multiple: true, multipleNonGreedy: true}),
    'allow-failed-verify': Flags.boolean({description: 'push a folder whose openelm-verify.json says it failed verification (refused otherwise); the model card then carries a warning', default: false}),
    'keep-stale': Flags.boolean({description: 'keep model*.safetensors shards (and shard index) of an earlier push that this one does not replace', default: false}),
  }

  async run(): Promise<PushResult> {
    const {args, flags} = await this.parse(Push)
    const renderer = new PushRenderer({progress: this.showProgress, quiet: this.jsonEnabled(), log: (line) => this.logToStderr(line)})
    const events = push(args.dir, {
      repo: flags.repo, token: flags.token, endpoint: flags.endpoint, revision: flags.revision, createPr: flags['create-pr'],
      private: flags.private, commitMessage: flags['commit-message'], include: flags.include, exclude: flags.exclude,
      dryRun: flags['dry-run'], baseModel: flags['base-model'], delete: flags.delete, keepStale: flags['keep-stale'],
      allowFailedVerify: flags['allow-failed-verify'],
    })
    let result: PushResult
    try {
      for (;;) {
        const step = await events.next()
        if (step.done) {
          result = step.value
          break
        }
        renderer.handle(step.value)
      }
    } finally {
      renderer.stop()
    }
    const target = `${result.repo}${result.revision === 'main' ? '' : `@${result.revision}`}`
    this.log(table(['file', 'size', 'storage'], result.files.map((f) => [f.path + (f.generated ? ' (generated)' : ''), bytes(f.bytes), f.lfs ? 'LFS' : 'regular'])))
    if (result.dryRun) {
      this.log(`dry run: ${plural(result.files.length, 'file')}, ${bytes(result.totalBytes)} would be pushed to ${target} at ${result.endpoint}; nothing was sent`)
    } else {
      this.log(`pushed ${plural(result.files.length, 'file')}, ${bytes(result.totalBytes)} to ${target}`)
      if (result.deleted.length > 0) this.log(`deleted ${result.deleted.join(', ')}`)
      this.log(`commit: ${result.commitUrl}`)
      if (result.pullRequestUrl) this.log(`pull request: ${result.pullRequestUrl}`)
    }
    return result
  }
}
