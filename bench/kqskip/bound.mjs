// Go/no-go prototype for issue #15 (brief kqskip): can make_qkx2_quants skip a trial's pass 2
// (cur_error = Σ w·(s·l + m − x)² in f32) when a lower bound on that f32 value is ≥ best_error?
// Scalar, f64 for the bound, over sub-blocks of real f32 weights (Q4_K/Q5_K weighting, n = 32).
// Counts the share of trials skippable per lane, per 4-lane v128 group and per 8-lane pair (the SIMD
// kernel runs two groups side by side), the "oracle" share (trials no lane of the pair keeps), and
// keptSkipped: trials the bound would skip that the exact search kept (must be 0).
// Usage: node bench/kqskip/bound.mjs MODEL.safetensors NMAX RMIN NSTEP [MB]
//   Q4_K: 15 -1 20    Q5_K: 31 -0.5 15
// Caveat: A, B, C are summed in f64 here; a kernel would have f32 sums (margin γ_n·Σ|terms|, already
// added below as 36u·Σ|terms|), so a real kernel skips at most what this counts.
import fs from 'fs'
const fr = Math.fround
const file = process.argv[2], nmax = +process.argv[3], rmin = +process.argv[4], nstep = +process.argv[5], MB = +(process.argv[6]||8)
const fd = fs.openSync(file,'r'); const hb = Buffer.alloc(8); fs.readSync(fd,hb,0,8,0)
const hlen = Number(hb.readBigUInt64LE(0)); 
const h = Buffer.alloc(hlen); fs.readSync(fd,h,0,hlen,8); const meta = JSON.parse(h.toString())
// sample from several tensors
let chunks=[]; const names=Object.keys(meta).filter(k=>k!=='__metadata__'&&meta[k].dtype==='F32'&&meta[k].data_offsets[1]-meta[k].data_offsets[0]>4e6)
const per = Math.floor(MB*1048576/Math.min(names.length,8)/1024)*1024
for (const nm of names.slice(0,8)) { const b=Buffer.alloc(per); fs.readSync(fd,b,0,per,8+hlen+meta[nm].data_offsets[0]); chunks.push(new Float32Array(b.buffer,b.byteOffset,per/4)) }
const u = 2**-24
const ni = f => (f <= 4194303 && f >= -4194303 ? fr(f + 12582912) - 12582912 : Math.round(f)) // ggml nearest_int in range
let oPair=0, trials=0, skipLane=0, keptSkipped=0, groupTrials=0, skipGroup=0, pairTrials=0, skipPair=0
for (const x of chunks) {
 const nsb = Math.floor(x.length/32)
 for (let g0=0; g0+8<=nsb; g0+=8) {
  const skips=[], oracle=[]
  for (let s=0;s<8;s++){
   const xo=(g0+s)*32, n=32
   let sx2=0; for(let i=0;i<n;i++) sx2=fr(sx2+fr(x[xo+i]*x[xo+i]))
   const av=fr(Math.sqrt(fr(sx2/32))); const w=new Float64Array(n); for(let i=0;i<n;i++) w[i]=fr(av+Math.abs(x[xo+i]))
   let mn=x[xo],mx=x[xo],W=w[0],sX=fr(w[0]*x[xo]); for(let i=1;i<n;i++){const xi=x[xo+i]; if(xi<mn)mn=xi; if(xi>mx)mx=xi; W=fr(W+w[i]); sX=fr(sX+fr(w[i]*xi))}
   if(mn>0)mn=0; const row=[]; skips.push(row); const orow=[]; oracle.push(orow); if(mx===mn){for(let t=0;t<=nstep;t++){row.push(true);orow.push(true)};continue}
   let Wd=0,Xd=0,Qd=0,Xa=0; for(let i=0;i<n;i++){Wd+=w[i];Xd+=w[i]*x[xo+i];Qd+=w[i]*x[xo+i]**2;Xa+=w[i]*Math.abs(x[xo+i])}
   let isc=fr(nmax/fr(mx-mn)), best=0
   for(let i=0;i<n;i++){const l=Math.min(nmax,Math.max(0,ni(fr(isc*fr(x[xo+i]-mn))))); let d=fr(fr(fr(fr(1/isc)*l)+mn)-x[xo+i]); best=fr(best+fr(w[i]*fr(d*d)))}
   for(let t=0;t<=nstep;t++){
    isc=fr(fr(fr(rmin+fr(fr(0.1)*t))+nmax)/fr(mx-mn))
    const L=new Array(n); let sL=0,sL2=0,sXL=0
    for(let i=0;i<n;i++){const l=Math.min(nmax,Math.max(0,ni(fr(isc*fr(x[xo+i]-mn))))); L[i]=l; const wl=fr(w[i]*l); sL=fr(sL+wl); sL2=fr(sL2+fr(wl*l)); sXL=fr(sXL+fr(wl*x[xo+i]))}
    const D=fr(fr(W*sL2)-fr(sL*sL)); if(!(D>0)){row.push(true);orow.push(true);continue}
    let sc=fr(fr(fr(W*sXL)-fr(sX*sL))/D), m=fr(fr(fr(sL2*sX)-fr(sL*sXL))/D); if(m>0){m=0;sc=fr(sXL/sL2)}
    // exact-ish E from f64 sums (A,B,C exact in f64 here; real kernel would use f32 sums + gamma_n margin)
    let A=0,B=0,C=0; for(let i=0;i<n;i++){A+=w[i]*L[i]*L[i];B+=w[i]*L[i];C+=w[i]*L[i]*x[xo+i]}
    const E=sc*sc*A+2*sc*m*B-2*sc*C+m*m*Wd-2*m*Xd+Qd
    const absT=sc*sc*A+2*Math.abs(sc*m)*B+2*Math.abs(sc)*nmax*Xa+m*m*Wd+2*Math.abs(m)*Xa+Qd
    const marginSums=absT*36*u  // gamma_n on f32 sums in the real kernel
    const H2=4*sc*sc*A*(1+u)**2+4*Math.abs(sc*m)*B*(1+u)+m*m*Wd
    const Ec=Math.max(0,E-marginSums)
    const lb=(1-u)**(n+3)*(Ec-2*u*Math.sqrt(Ec)*Math.sqrt(H2)) - marginSums
    let cur=0; for(let i=0;i<n;i++){let d=fr(fr(fr(sc*L[i])+m)-x[xo+i]); cur=fr(cur+fr(w[i]*fr(d*d)))}
    const best0=best; const skip=lb>=best; trials++; if(skip)skipLane++
    if(cur<best){ if(skip)keptSkipped++; best=cur; mn=m }
    row.push(skip); orow.push(cur>=best0)
   }
  }
  for(let t=0;t<=nstep;t++){ for(let q=0;q<2;q++){groupTrials++; if(skips.slice(4*q,4*q+4).every(r=>r[t]))skipGroup++} pairTrials++; if(skips.every(r=>r[t]))skipPair++; if(oracle.every(r=>r[t]))oPair++ }
 }
}
console.log(JSON.stringify({file:file.split('/').slice(-2).join('/'),nmax,trials,laneSkip:(skipLane/trials).toFixed(4),groupSkip:(skipGroup/groupTrials).toFixed(4),pairSkip:(skipPair/pairTrials).toFixed(4),keptSkipped,oraclePairSkip:(oPair/pairTrials).toFixed(4)}))
